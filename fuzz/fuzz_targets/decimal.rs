//! Fuzz target: exact decimal tokens with exponents; must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mmtrader::feeds::normalized::parse_decimal(data, mmtrader::feeds::normalized::Rounding::Exact);
    let _ = mmtrader::feeds::normalized::parse_decimal(data, mmtrader::feeds::normalized::Rounding::HalfEven);
});
