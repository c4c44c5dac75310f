//! Colour themes: built-in dark, light and high-contrast, overridable by a user file of the same
//! name; truecolour with a 256-colour fallback.

use std::path::Path;

use ratatui::style::Color;
use serde::Deserialize;

/// Built-in theme files, compiled in so the binary works from any directory.
const BUILT_IN: [(&str, &str); 3] = [
    ("dark", include_str!("../../themes/dark.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
];

/// Names of the built-in themes.
pub fn built_in_names() -> impl Iterator<Item = &'static str> {
    BUILT_IN.iter().map(|(n, _)| *n)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: String,
    background: String,
    foreground: String,
    muted: String,
    accent: String,
    border: String,
    title: String,
    bid: String,
    ask: String,
    up: String,
    down: String,
    warning: String,
    error: String,
    ok: String,
    highlight_bg: String,
}

/// Resolved colours of one theme.
#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    /// Theme name.
    pub name: String,
    /// Screen background.
    pub background: Color,
    /// Normal text.
    pub foreground: Color,
    /// Secondary text.
    pub muted: Color,
    /// Focus and emphasis.
    pub accent: Color,
    /// Pane borders.
    pub border: Color,
    /// Pane titles.
    pub title: Color,
    /// Bid side.
    pub bid: Color,
    /// Ask side.
    pub ask: Color,
    /// Rising values.
    pub up: Color,
    /// Falling values.
    pub down: Color,
    /// Warnings (stale, reconnecting).
    pub warning: Color,
    /// Errors.
    pub error: Color,
    /// Healthy state.
    pub ok: Color,
    /// Selected row background.
    pub highlight_bg: Color,
    /// True when colours are 24-bit; blends fall back to the 256-colour palette otherwise.
    pub truecolor: bool,
}

/// Why a theme could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ThemeError {
    /// Neither a user file nor a built-in theme has this name.
    #[error("unknown theme {name:?}; built-in themes: dark, light, high-contrast")]
    Unknown {
        /// Requested name.
        name: String,
    },
    /// The file is not a valid theme.
    #[error("{origin}: {message}")]
    Invalid {
        /// File (or built-in name).
        origin: String,
        /// What is wrong, with the key.
        message: String,
    },
}

/// Parses a colour: a name, `#rrggbb`, or an index 0-255; `truecolor = false` maps RGB to the
/// nearest entry of the xterm 256-colour palette.
pub fn parse_color(text: &str, truecolor: bool) -> Option<Color> {
    let t = text.trim();
    if let Some(hex) = t.strip_prefix('#') {
        if hex.len() != 6 {
            return None;
        }
        let v = u32::from_str_radix(hex, 16).ok()?;
        let (r, g, b) = ((v >> 16) as u8, (v >> 8) as u8, v as u8);
        return Some(if truecolor {
            Color::Rgb(r, g, b)
        } else {
            Color::Indexed(rgb_to_256(r, g, b))
        });
    }
    if let Ok(i) = t.parse::<u8>() {
        return Some(Color::Indexed(i));
    }
    t.replace(['-', ' '], "_")
        .parse::<Color>()
        .ok()
        .or_else(|| t.parse::<Color>().ok())
}

/// Nearest xterm-256 index: the 6×6×6 cube or the 24-step grey ramp, whichever is closer.
pub fn rgb_to_256(r: u8, g: u8, b: u8) -> u8 {
    const STEPS: [u8; 6] = [0, 95, 135, 175, 215, 255];
    let nearest = |v: u8| -> usize {
        (0..6)
            .min_by_key(|&i| (STEPS[i] as i32 - v as i32).abs())
            .unwrap_or(0)
    };
    let (ri, gi, bi) = (nearest(r), nearest(g), nearest(b));
    let cube = (16 + 36 * ri + 6 * gi + bi) as u8;
    let dist = |a: (u8, u8, u8)| {
        let d = |x: u8, y: u8| (x as i32 - y as i32).pow(2);
        d(a.0, r) + d(a.1, g) + d(a.2, b)
    };
    let cube_d = dist((STEPS[ri], STEPS[gi], STEPS[bi]));
    let avg = (r as u32 + g as u32 + b as u32) / 3;
    let gi_ramp = (((avg as i32 - 8).max(0) + 5) / 10).min(23) as u8;
    let grey = 8 + 10 * gi_ramp;
    if dist((grey, grey, grey)) < cube_d {
        232 + gi_ramp
    } else {
        cube
    }
}

/// True when the terminal announces 24-bit colour (`COLORTERM=truecolor|24bit`).
pub fn terminal_has_truecolor() -> bool {
    std::env::var("COLORTERM")
        .map(|v| v.eq_ignore_ascii_case("truecolor") || v.eq_ignore_ascii_case("24bit"))
        .unwrap_or(false)
}

impl Theme {
    /// Loads `name`: `<user_dir>/<name>.toml` when it exists, else the built-in theme.
    pub fn load(name: &str, user_dir: Option<&Path>, truecolor: bool) -> Result<Self, ThemeError> {
        if let Some(dir) = user_dir {
            let path = dir.join(format!("{name}.toml"));
            if path.is_file() {
                let text = std::fs::read_to_string(&path).map_err(|e| ThemeError::Invalid {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                })?;
                return Self::parse(&text, &path.display().to_string(), truecolor);
            }
        }
        let (_, text) =
            BUILT_IN
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| ThemeError::Unknown {
                    name: name.to_string(),
                })?;
        Self::parse(text, &format!("built-in theme {name}"), truecolor)
    }

    /// Parses theme TOML text.
    pub fn parse(text: &str, origin: &str, truecolor: bool) -> Result<Self, ThemeError> {
        let invalid = |message: String| ThemeError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let f: ThemeFile = toml::from_str(text).map_err(|e| invalid(e.message().to_string()))?;
        let c = |key: &str, v: &str| {
            parse_color(v, truecolor).ok_or_else(|| {
                invalid(format!(
                    "key `{key}`: expected a colour name, \"#rrggbb\" or 0-255, got {v:?}"
                ))
            })
        };
        Ok(Self {
            name: f.name.clone(),
            background: c("background", &f.background)?,
            foreground: c("foreground", &f.foreground)?,
            muted: c("muted", &f.muted)?,
            accent: c("accent", &f.accent)?,
            border: c("border", &f.border)?,
            title: c("title", &f.title)?,
            bid: c("bid", &f.bid)?,
            ask: c("ask", &f.ask)?,
            up: c("up", &f.up)?,
            down: c("down", &f.down)?,
            warning: c("warning", &f.warning)?,
            error: c("error", &f.error)?,
            ok: c("ok", &f.ok)?,
            highlight_bg: c("highlight_bg", &f.highlight_bg)?,
            truecolor,
        })
    }

    /// The colour `t` of the way from `from` to `to` (`t` clamped to 0..=1), in this theme's
    /// colour mode; heatmap intensities need a continuous scale the named colours lack.
    pub fn blend(&self, from: Color, to: Color, t: f64) -> Color {
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (a, b) = (color_rgb(from), color_rgb(to));
        let mix = |x: u8, y: u8| (x as f64 + (y as f64 - x as f64) * t).round() as u8;
        let (r, g, b) = (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2));
        if self.truecolor {
            Color::Rgb(r, g, b)
        } else {
            Color::Indexed(rgb_to_256(r, g, b))
        }
    }
}

/// Approximate RGB of any colour (xterm defaults for named and indexed colours).
pub fn color_rgb(c: Color) -> (u8, u8, u8) {
    const ANSI: [(u8, u8, u8); 16] = [
        (0, 0, 0),
        (205, 0, 0),
        (0, 205, 0),
        (205, 205, 0),
        (0, 0, 238),
        (205, 0, 205),
        (0, 205, 205),
        (229, 229, 229),
        (127, 127, 127),
        (255, 0, 0),
        (0, 255, 0),
        (255, 255, 0),
        (92, 92, 255),
        (255, 0, 255),
        (0, 255, 255),
        (255, 255, 255),
    ];
    let indexed = |i: u8| -> (u8, u8, u8) {
        match i {
            0..=15 => ANSI[i as usize],
            16..=231 => {
                const STEPS: [u8; 6] = [0, 95, 135, 175, 215, 255];
                let v = i - 16;
                (
                    STEPS[(v / 36) as usize],
                    STEPS[(v / 6 % 6) as usize],
                    STEPS[(v % 6) as usize],
                )
            }
            _ => {
                let g = 8 + 10 * (i - 232);
                (g, g, g)
            }
        }
    };
    match c {
        Color::Rgb(r, g, b) => (r, g, b),
        Color::Indexed(i) => indexed(i),
        Color::Black | Color::Reset => indexed(0),
        Color::Red => indexed(1),
        Color::Green => indexed(2),
        Color::Yellow => indexed(3),
        Color::Blue => indexed(4),
        Color::Magenta => indexed(5),
        Color::Cyan => indexed(6),
        Color::Gray => indexed(7),
        Color::DarkGray => indexed(8),
        Color::LightRed => indexed(9),
        Color::LightGreen => indexed(10),
        Color::LightYellow => indexed(11),
        Color::LightBlue => indexed(12),
        Color::LightMagenta => indexed(13),
        Color::LightCyan => indexed(14),
        Color::White => indexed(15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_theme_parses_in_both_colour_modes() {
        for name in built_in_names() {
            let t = Theme::load(name, None, true).unwrap();
            assert_eq!(t.name, name);
            let t256 = Theme::load(name, None, false).unwrap();
            assert!(!matches!(t256.bid, Color::Rgb(..)));
        }
    }

    #[test]
    fn user_file_overrides_built_in() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../themes/dark.toml").replace("#22c55e", "#010203");
        std::fs::write(dir.path().join("dark.toml"), text).unwrap();
        let t = Theme::load("dark", Some(dir.path()), true).unwrap();
        assert_eq!(t.bid, Color::Rgb(1, 2, 3));
        std::fs::write(dir.path().join("dark.toml"), "name = 1").unwrap();
        assert!(Theme::load("dark", Some(dir.path()), true).is_err());
        assert!(matches!(
            Theme::load("nope", None, true),
            Err(ThemeError::Unknown { .. })
        ));
    }

    #[test]
    fn blend_interpolates_in_both_colour_modes() {
        let mut t = Theme::load("dark", None, true).unwrap();
        let (black, white) = (Color::Rgb(0, 0, 0), Color::Rgb(200, 100, 50));
        assert_eq!(t.blend(black, white, 0.0), black);
        assert_eq!(t.blend(black, white, 1.0), white);
        assert_eq!(t.blend(black, white, 0.5), Color::Rgb(100, 50, 25));
        assert_eq!(t.blend(black, white, f64::NAN), black);
        t.truecolor = false;
        assert_eq!(
            t.blend(black, white, 1.0),
            Color::Indexed(rgb_to_256(200, 100, 50))
        );
        assert_eq!(color_rgb(Color::Indexed(196)), (255, 0, 0));
        assert_eq!(color_rgb(Color::Indexed(244)), (128, 128, 128));
    }

    #[test]
    fn colours_parse_and_fall_back_to_256() {
        assert_eq!(parse_color("light_red", true), Some(Color::LightRed));
        assert_eq!(parse_color("light-red", true), Some(Color::LightRed));
        assert_eq!(parse_color("#ff0000", true), Some(Color::Rgb(255, 0, 0)));
        assert_eq!(parse_color("#ff0000", false), Some(Color::Indexed(196)));
        assert_eq!(parse_color("#808080", false), Some(Color::Indexed(244)));
        assert_eq!(parse_color("17", true), Some(Color::Indexed(17)));
        assert_eq!(parse_color("#12", true), None);
    }
}
