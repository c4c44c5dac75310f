//! Exports a rendered terminal buffer as SVG: monospace text on coloured cell backgrounds, so
//! a screenshot of the desk can live in the repository as reviewable text.

use std::fmt::Write as _;

use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};

use super::theme::color_rgb;

/// Cell width and height in SVG pixels (a typical 1:2 monospace cell).
const CELL_W: u32 = 9;
const CELL_H: u32 = 18;

fn hex(c: Color, fallback: (u8, u8, u8)) -> String {
    let (r, g, b) = match c {
        Color::Reset => fallback,
        other => color_rgb(other),
    };
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn escape(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '"' => out.push_str("&quot;"),
        '\'' => out.push_str("&apos;"),
        c if (c as u32) < 0x20 => out.push(' '),
        c => out.push(c),
    }
}

/// The buffer as a standalone SVG document; `bg`/`fg` stand in for `Color::Reset`.
pub fn buffer_to_svg(buf: &Buffer, bg: Color, fg: Color) -> String {
    let area = buf.area;
    let (w, h) = (
        u32::from(area.width) * CELL_W,
        u32::from(area.height) * CELL_H,
    );
    let default_bg = color_rgb(bg);
    let default_fg = color_rgb(fg);
    let mut out = String::with_capacity(area.area() as usize * 40);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <style>text{{font-family:'DejaVu Sans Mono','Menlo','Consolas',monospace;font-size:15px;white-space:pre}}</style>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"{}\"/>\n",
        hex(bg, default_bg)
    );
    for y in 0..area.height {
        // Backgrounds: runs of equal colour become one rectangle.
        let mut x = 0;
        while x < area.width {
            let color = hex(buf[(area.x + x, area.y + y)].bg, default_bg);
            let start = x;
            while x < area.width && hex(buf[(area.x + x, area.y + y)].bg, default_bg) == color {
                x += 1;
            }
            if color != hex(bg, default_bg) {
                let _ = writeln!(
                    out,
                    "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{CELL_H}\" fill=\"{color}\"/>",
                    u32::from(start) * CELL_W,
                    u32::from(y) * CELL_H,
                    u32::from(x - start) * CELL_W
                );
            }
        }
        // Text: runs of equal style without blanks, each starting at its cell and stretched to
        // exactly its cells (`textLength`), so widths never drift whatever font renders it.
        let mut x = 0;
        while x < area.width {
            let cell = &buf[(area.x + x, area.y + y)];
            if cell.symbol().trim().is_empty() {
                x += 1;
                continue;
            }
            let style = (
                hex(cell.fg, default_fg),
                cell.modifier.contains(Modifier::BOLD),
            );
            let start = x;
            let mut text = String::new();
            while x < area.width {
                let c = &buf[(area.x + x, area.y + y)];
                let sym = c.symbol();
                if sym.trim().is_empty()
                    || (hex(c.fg, default_fg), c.modifier.contains(Modifier::BOLD)) != style
                {
                    break;
                }
                if let Some(ch) = sym.chars().next() {
                    escape(ch, &mut text);
                }
                x += 1;
            }
            let weight = if style.1 { " font-weight=\"bold\"" } else { "" };
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" textLength=\"{}\" lengthAdjust=\"spacingAndGlyphs\" fill=\"{}\"{weight}>{text}</text>",
                u32::from(start) * CELL_W,
                u32::from(y) * CELL_H + CELL_H - 5,
                u32::from(x - start) * CELL_W,
                style.0
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::layout::Rect;
    use ratatui::style::Style;

    #[test]
    fn svg_has_text_colours_and_escapes() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 6, 2));
        buf.set_string(0, 0, "a<b", Style::default().fg(Color::Rgb(255, 0, 0)));
        buf.set_string(
            0,
            1,
            "ok",
            Style::default()
                .bg(Color::Rgb(0, 0, 255))
                .add_modifier(Modifier::BOLD),
        );
        let svg = buffer_to_svg(&buf, Color::Rgb(0, 0, 0), Color::Rgb(200, 200, 200));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("width=\"54\" height=\"36\""), "{svg}");
        assert!(
            svg.contains(">a&lt;b</text>") && svg.contains("fill=\"#ff0000\""),
            "{svg}"
        );
        assert!(svg.contains("x=\"0\" y=\"13\" textLength=\"27\""), "{svg}");
        assert!(svg.contains("fill=\"#0000ff\"") && svg.contains("font-weight=\"bold\">ok<"));
    }
}
