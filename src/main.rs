fn main() {
    std::process::exit(mmtrader::cli::main());
}
