//! The simulated exchange: a seeded market served over Binance's websocket and REST protocol.
