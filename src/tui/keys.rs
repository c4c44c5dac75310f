//! The key map: one table that drives both the key handling and the help overlay.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the program.
    Quit,
    /// Stop or start the market-data feed.
    ToggleFeed,
    /// Next symbol.
    NextSymbol,
    /// Previous symbol.
    PrevSymbol,
    /// Show 1 s candles.
    Timeframe1s,
    /// Show 1 m candles.
    Timeframe1m,
    /// Show 1 h candles.
    Timeframe1h,
    /// Show 1 d candles.
    Timeframe1d,
    /// Open or close the help overlay.
    ToggleHelp,
    /// Scroll the log pane up.
    LogUp,
    /// Scroll the log pane down.
    LogDown,
}

/// One binding: the key as shown in help, the matcher, the action and its description.
pub struct Binding {
    /// Key label in the help overlay.
    pub label: &'static str,
    /// Keys that trigger it.
    pub keys: &'static [KeyCode],
    /// The action.
    pub action: Action,
    /// What it does, for the help overlay.
    pub help: &'static str,
}

/// Every binding, in help order.
pub const KEYMAP: &[Binding] = &[
    Binding {
        label: "q",
        keys: &[KeyCode::Char('q')],
        action: Action::Quit,
        help: "quit",
    },
    Binding {
        label: "f",
        keys: &[KeyCode::Char('f')],
        action: Action::ToggleFeed,
        help: "stop / start the market-data feed",
    },
    Binding {
        label: "tab",
        keys: &[KeyCode::Tab, KeyCode::Right],
        action: Action::NextSymbol,
        help: "next symbol",
    },
    Binding {
        label: "shift-tab",
        keys: &[KeyCode::BackTab, KeyCode::Left],
        action: Action::PrevSymbol,
        help: "previous symbol",
    },
    Binding {
        label: "1",
        keys: &[KeyCode::Char('1')],
        action: Action::Timeframe1s,
        help: "1 s candles",
    },
    Binding {
        label: "2",
        keys: &[KeyCode::Char('2')],
        action: Action::Timeframe1m,
        help: "1 m candles",
    },
    Binding {
        label: "3",
        keys: &[KeyCode::Char('3')],
        action: Action::Timeframe1h,
        help: "1 h candles",
    },
    Binding {
        label: "4",
        keys: &[KeyCode::Char('4')],
        action: Action::Timeframe1d,
        help: "1 d candles",
    },
    Binding {
        label: "?",
        keys: &[KeyCode::Char('?'), KeyCode::F(1)],
        action: Action::ToggleHelp,
        help: "this help",
    },
    Binding {
        label: "up",
        keys: &[KeyCode::Up],
        action: Action::LogUp,
        help: "scroll the log up",
    },
    Binding {
        label: "down",
        keys: &[KeyCode::Down],
        action: Action::LogDown,
        help: "scroll the log down",
    },
];

/// The action bound to a key event, if any (Ctrl-C always quits).
pub fn action_for(key: KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    KEYMAP
        .iter()
        .find(|b| b.keys.contains(&key.code))
        .map(|b| b.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_is_bound_twice() {
        let mut seen = Vec::new();
        for b in KEYMAP {
            for k in b.keys {
                assert!(!seen.contains(k), "{k:?} bound twice");
                seen.push(*k);
            }
        }
    }

    #[test]
    fn keys_map_to_actions() {
        let k = |c| KeyEvent::new(c, KeyModifiers::NONE);
        assert_eq!(action_for(k(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(action_for(k(KeyCode::Tab)), Some(Action::NextSymbol));
        assert_eq!(
            action_for(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(action_for(k(KeyCode::Char('z'))), None);
    }
}
