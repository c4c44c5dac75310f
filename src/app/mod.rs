//! Commands: wiring of the data path, the simulator and the screen.
