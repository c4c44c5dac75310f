//! Binance spot (and USD-M futures book rules): the real websocket and REST protocol.
