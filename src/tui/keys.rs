//! The key map: one table that drives both the key handling and the help overlay. Defaults are
//! built in; `[ui.keys]` in the configuration replaces the keys of any action by name.

use std::collections::BTreeMap;

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
    /// Focus the next pane.
    NextPane,
    /// Focus the previous pane.
    PrevPane,
    /// Cycle the log pane's minimum level (ERROR, WARN, INFO, DEBUG).
    CycleLogLevel,
    /// Open or close the help overlay.
    ToggleHelp,
    /// Scroll the log pane up.
    LogUp,
    /// Scroll the log pane down.
    LogDown,
    /// Stop or start model inference (and the decisions made from it).
    ToggleInference,
    /// Stop or start online training.
    ToggleTraining,
    /// Stop or start trading (orders to the executor).
    ToggleTrading,
    /// Select the next live-tunable parameter.
    NextParam,
    /// Select the previous live-tunable parameter.
    PrevParam,
    /// Raise the selected parameter by one step.
    RaiseParam,
    /// Lower the selected parameter by one step.
    LowerParam,
    /// Switch from paper to live trading (asks for confirmation).
    GoLive,
    /// Close every position at market (asks for confirmation).
    Flatten,
    /// Halt trading, cancel every order and flatten (asks for confirmation).
    KillSwitch,
    /// Lift a halt (kill switch, drawdown, breaker) by hand (asks for confirmation).
    Resume,
    /// Answer yes to the open confirmation.
    Confirm,
    /// Answer no to the open confirmation.
    Cancel,
}

/// One default binding: configuration name, default keys, action and help text.
struct DefaultBinding {
    name: &'static str,
    keys: &'static [&'static str],
    action: Action,
    help: &'static str,
}

/// Every action with its default keys, in help order.
const DEFAULTS: &[DefaultBinding] = &[
    DefaultBinding {
        name: "quit",
        keys: &["q"],
        action: Action::Quit,
        help: "quit",
    },
    DefaultBinding {
        name: "toggle_feed",
        keys: &["f"],
        action: Action::ToggleFeed,
        help: "start/stop data feed",
    },
    DefaultBinding {
        name: "next_symbol",
        keys: &["tab", "right"],
        action: Action::NextSymbol,
        help: "next symbol",
    },
    DefaultBinding {
        name: "prev_symbol",
        keys: &["shift-tab", "left"],
        action: Action::PrevSymbol,
        help: "previous symbol",
    },
    DefaultBinding {
        name: "timeframe_1s",
        keys: &["1"],
        action: Action::Timeframe1s,
        help: "1 s candles",
    },
    DefaultBinding {
        name: "timeframe_1m",
        keys: &["2"],
        action: Action::Timeframe1m,
        help: "1 m candles",
    },
    DefaultBinding {
        name: "timeframe_1h",
        keys: &["3"],
        action: Action::Timeframe1h,
        help: "1 h candles",
    },
    DefaultBinding {
        name: "timeframe_1d",
        keys: &["4"],
        action: Action::Timeframe1d,
        help: "1 d candles",
    },
    DefaultBinding {
        name: "next_pane",
        keys: &["p"],
        action: Action::NextPane,
        help: "focus the next pane",
    },
    DefaultBinding {
        name: "prev_pane",
        keys: &["P"],
        action: Action::PrevPane,
        help: "focus previous pane",
    },
    DefaultBinding {
        name: "log_level",
        keys: &["l"],
        action: Action::CycleLogLevel,
        help: "log level filter",
    },
    DefaultBinding {
        name: "help",
        keys: &["?", "f1"],
        action: Action::ToggleHelp,
        help: "this help",
    },
    DefaultBinding {
        name: "log_up",
        keys: &["up", "pageup"],
        action: Action::LogUp,
        help: "scroll the log up",
    },
    DefaultBinding {
        name: "log_down",
        keys: &["down", "pagedown"],
        action: Action::LogDown,
        help: "scroll the log down",
    },
    DefaultBinding {
        name: "toggle_inference",
        keys: &["i"],
        action: Action::ToggleInference,
        help: "start/stop inference",
    },
    DefaultBinding {
        name: "toggle_training",
        keys: &["t"],
        action: Action::ToggleTraining,
        help: "start/stop training",
    },
    DefaultBinding {
        name: "toggle_trading",
        keys: &["e"],
        action: Action::ToggleTrading,
        help: "start/stop trading",
    },
    DefaultBinding {
        name: "next_param",
        keys: &["]"],
        action: Action::NextParam,
        help: "next live parameter",
    },
    DefaultBinding {
        name: "prev_param",
        keys: &["["],
        action: Action::PrevParam,
        help: "previous live parameter",
    },
    DefaultBinding {
        name: "raise_param",
        keys: &["+", "="],
        action: Action::RaiseParam,
        help: "raise parameter (live)",
    },
    DefaultBinding {
        name: "lower_param",
        keys: &["-", "_"],
        action: Action::LowerParam,
        help: "lower parameter (live)",
    },
    DefaultBinding {
        name: "go_live",
        keys: &["L"],
        action: Action::GoLive,
        help: "go live (asks y/n)",
    },
    DefaultBinding {
        name: "flatten",
        keys: &["X"],
        action: Action::Flatten,
        help: "flatten all (asks y/n)",
    },
    DefaultBinding {
        name: "kill_switch",
        keys: &["K"],
        action: Action::KillSwitch,
        help: "kill switch (asks y/n)",
    },
    DefaultBinding {
        name: "resume",
        keys: &["R"],
        action: Action::Resume,
        help: "lift a halt (asks y/n)",
    },
    DefaultBinding {
        name: "confirm",
        keys: &["y"],
        action: Action::Confirm,
        help: "yes to a confirmation",
    },
    DefaultBinding {
        name: "cancel",
        keys: &["n", "esc"],
        action: Action::Cancel,
        help: "no / close the overlay",
    },
];

/// Names accepted in `[ui.keys]`, in help order.
pub fn action_names() -> impl Iterator<Item = &'static str> {
    DEFAULTS.iter().map(|d| d.name)
}

/// One binding: the keys, the action and its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Key label in the help overlay (the keys' names, `/`-separated).
    pub label: String,
    /// Keys that trigger it.
    pub keys: Vec<KeyCode>,
    /// The action.
    pub action: Action,
    /// What it does, for the help overlay.
    pub help: &'static str,
}

/// Why `[ui.keys]` could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyMapError {
    /// The action name is not one of [`action_names`].
    #[error("ui.keys.{name}: unknown action; expected one of {expected}")]
    UnknownAction {
        /// Name given.
        name: String,
        /// Accepted names.
        expected: String,
    },
    /// A key text that is not a character or a known key name.
    #[error(
        "ui.keys.{action}: unknown key {key:?}; expected one character or tab, shift-tab, up, down, left, right, pageup, pagedown, home, end, enter, esc, f1-f12"
    )]
    UnknownKey {
        /// Action being bound.
        action: String,
        /// The key text.
        key: String,
    },
    /// An action left without any key.
    #[error("ui.keys.{0}: at least one key is required")]
    NoKeys(String),
    /// The same key bound to two actions.
    #[error("key {key:?} is bound to both {first} and {second}")]
    Duplicate {
        /// The key text.
        key: String,
        /// First action's name.
        first: String,
        /// Second action's name.
        second: String,
    },
}

/// Parses a key name: one character (case-sensitive) or a named key (case-insensitive).
pub fn parse_key(text: &str) -> Option<KeyCode> {
    let mut chars = text.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Some(KeyCode::Char(c));
    }
    let lower = text.trim().to_ascii_lowercase();
    let code = match lower.as_str() {
        "tab" => KeyCode::Tab,
        "shift-tab" | "backtab" => KeyCode::BackTab,
        "up" => KeyCode::Up,
        "down" => KeyCode::Down,
        "left" => KeyCode::Left,
        "right" => KeyCode::Right,
        "pageup" => KeyCode::PageUp,
        "pagedown" => KeyCode::PageDown,
        "home" => KeyCode::Home,
        "end" => KeyCode::End,
        "enter" => KeyCode::Enter,
        "esc" => KeyCode::Esc,
        "space" => KeyCode::Char(' '),
        f if f.starts_with('f') => {
            let n: u8 = f[1..].parse().ok()?;
            if !(1..=12).contains(&n) {
                return None;
            }
            KeyCode::F(n)
        }
        _ => return None,
    };
    Some(code)
}

/// The resolved key map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    bindings: Vec<Binding>,
}

impl Default for KeyMap {
    fn default() -> Self {
        Self::with_overrides(&BTreeMap::new()).expect("built-in key map is valid")
    }
}

impl KeyMap {
    /// Defaults with the keys of the named actions replaced by `overrides`.
    pub fn with_overrides(overrides: &BTreeMap<String, Vec<String>>) -> Result<Self, KeyMapError> {
        for name in overrides.keys() {
            if !DEFAULTS.iter().any(|d| d.name == name) {
                return Err(KeyMapError::UnknownAction {
                    name: name.clone(),
                    expected: action_names().collect::<Vec<_>>().join(", "),
                });
            }
        }
        let mut bindings = Vec::with_capacity(DEFAULTS.len());
        let mut seen: Vec<(KeyCode, &str, &str)> = Vec::new();
        for d in DEFAULTS {
            let texts: Vec<&str> = match overrides.get(d.name) {
                Some(list) => list.iter().map(String::as_str).collect(),
                None => d.keys.to_vec(),
            };
            if texts.is_empty() {
                return Err(KeyMapError::NoKeys(d.name.to_string()));
            }
            let mut keys = Vec::with_capacity(texts.len());
            for t in &texts {
                let code = parse_key(t).ok_or_else(|| KeyMapError::UnknownKey {
                    action: d.name.to_string(),
                    key: t.to_string(),
                })?;
                if let Some((_, first, _)) = seen.iter().find(|(k, _, _)| *k == code) {
                    return Err(KeyMapError::Duplicate {
                        key: t.to_string(),
                        first: first.to_string(),
                        second: d.name.to_string(),
                    });
                }
                seen.push((code, d.name, t));
                keys.push(code);
            }
            bindings.push(Binding {
                label: texts.join("/"),
                keys,
                action: d.action,
                help: d.help,
            });
        }
        Ok(Self { bindings })
    }

    /// Every binding, in help order.
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The label of an action's keys (for hints).
    pub fn label(&self, action: Action) -> &str {
        self.bindings
            .iter()
            .find(|b| b.action == action)
            .map(|b| b.label.as_str())
            .unwrap_or("")
    }

    /// The first key of an action (for one-line hints).
    pub fn short_label(&self, action: Action) -> &str {
        let label = self.label(action);
        label.split('/').next().unwrap_or(label)
    }

    /// The action bound to a key event, if any (Ctrl-C always quits).
    pub fn action_for(&self, key: KeyEvent) -> Option<Action> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Action::Quit);
        }
        self.bindings
            .iter()
            .find(|b| b.keys.contains(&key.code))
            .map(|b| b.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn defaults_bind_every_action_once() {
        let map = KeyMap::default();
        assert_eq!(map.bindings().len(), DEFAULTS.len());
        assert_eq!(map.action_for(k(KeyCode::Char('q'))), Some(Action::Quit));
        assert_eq!(map.action_for(k(KeyCode::Tab)), Some(Action::NextSymbol));
        assert_eq!(
            map.action_for(k(KeyCode::Char('p'))),
            Some(Action::NextPane)
        );
        assert_eq!(
            map.action_for(k(KeyCode::Char('P'))),
            Some(Action::PrevPane)
        );
        assert_eq!(map.action_for(k(KeyCode::F(1))), Some(Action::ToggleHelp));
        assert_eq!(
            map.action_for(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Action::Quit)
        );
        assert_eq!(map.action_for(k(KeyCode::Char('z'))), None);
        assert_eq!(map.label(Action::NextSymbol), "tab/right");
        assert_eq!(map.short_label(Action::NextSymbol), "tab");
    }

    #[test]
    fn overrides_replace_keys_and_are_validated() {
        let mut o = BTreeMap::new();
        o.insert(
            "quit".to_string(),
            vec!["x".to_string(), "home".to_string()],
        );
        let map = KeyMap::with_overrides(&o).unwrap();
        assert_eq!(map.action_for(k(KeyCode::Char('x'))), Some(Action::Quit));
        assert_eq!(map.action_for(k(KeyCode::Home)), Some(Action::Quit));
        assert_eq!(map.action_for(k(KeyCode::Char('q'))), None);
        assert_eq!(map.label(Action::Quit), "x/home");

        o.insert("quit".to_string(), vec!["f".to_string()]);
        assert!(matches!(
            KeyMap::with_overrides(&o),
            Err(KeyMapError::Duplicate { .. })
        ));
        o.insert("quit".to_string(), vec!["ctrl-meta-q".to_string()]);
        let e = KeyMap::with_overrides(&o).unwrap_err();
        assert!(e.to_string().contains("ui.keys.quit"), "{e}");
        o.insert("quit".to_string(), vec![]);
        assert_eq!(
            KeyMap::with_overrides(&o),
            Err(KeyMapError::NoKeys("quit".into()))
        );
        let mut o = BTreeMap::new();
        o.insert("fly".to_string(), vec!["y".to_string()]);
        assert!(matches!(
            KeyMap::with_overrides(&o),
            Err(KeyMapError::UnknownAction { .. })
        ));
    }

    #[test]
    fn key_names_parse() {
        assert_eq!(parse_key("Q"), Some(KeyCode::Char('Q')));
        assert_eq!(parse_key("PageUp"), Some(KeyCode::PageUp));
        assert_eq!(parse_key("f12"), Some(KeyCode::F(12)));
        assert_eq!(parse_key("f13"), None);
        assert_eq!(parse_key("fx"), None);
        assert_eq!(parse_key(""), None);
    }
}
