//! Where each participant's video goes in a composite picture. Pure
//! arithmetic: the mixer applies the rectangles to compositor pads (which
//! keep each picture's aspect ratio inside its rectangle).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A rectangle in output pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x: i32,
    /// Top.
    pub y: i32,
    /// Width.
    pub w: i32,
    /// Height.
    pub h: i32,
}

impl Rect {
    /// The centre point.
    pub fn center(&self) -> (i32, i32) {
        (self.x + self.w / 2, self.y + self.h / 2)
    }
}

/// How tiles are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LayoutMode {
    /// Everyone the same size, in a grid that fills the picture.
    #[default]
    Grid,
    /// The active speaker large, everyone else in a strip below.
    Speaker,
}

/// Columns and rows of a grid of `n` tiles on a `width`×`height` picture:
/// the arrangement that makes 16:9 tiles the largest.
pub fn grid_shape(n: usize, width: i32, height: i32) -> (usize, usize) {
    if n == 0 {
        return (1, 1);
    }
    let mut best = (1, n);
    let mut best_area = 0.0;
    for cols in 1..=n {
        let rows = n.div_ceil(cols);
        let (cw, ch) = (
            f64::from(width) / cols as f64,
            f64::from(height) / rows as f64,
        );
        // Largest 16:9 picture that fits the cell.
        let (w, h) = if cw / ch > 16.0 / 9.0 {
            (ch * 16.0 / 9.0, ch)
        } else {
            (cw, cw * 9.0 / 16.0)
        };
        // On a tie, more columns (side by side reads better than stacked).
        if w * h >= best_area - 0.5 {
            best_area = w * h;
            best = (cols, rows);
        }
    }
    best
}

/// Rectangles of `n` tiles in a grid filling `width`×`height`, in reading order.
/// The last row, when not full, is centred.
pub fn grid(n: usize, width: i32, height: i32) -> Vec<Rect> {
    if n == 0 {
        return Vec::new();
    }
    let (cols, rows) = grid_shape(n, width, height);
    let (cw, ch) = (width / cols as i32, height / rows as i32);
    (0..n)
        .map(|i| {
            let (row, col) = (i / cols, i % cols);
            let in_row = if row == rows - 1 {
                n - row * cols
            } else {
                cols
            };
            let offset = (width - cw * in_row as i32) / 2;
            Rect {
                x: offset + col as i32 * cw,
                y: row as i32 * ch,
                w: cw,
                h: ch,
            }
        })
        .collect()
}

/// Speaker layout: tile `focus` takes the top three quarters, the others
/// share a strip at the bottom (in order, skipping the focus).
pub fn speaker(n: usize, focus: usize, width: i32, height: i32) -> Vec<Rect> {
    if n <= 1 {
        return grid(n, width, height);
    }
    let focus = focus.min(n - 1);
    let strip_h = height / 4;
    let main = Rect {
        x: 0,
        y: 0,
        w: width,
        h: height - strip_h,
    };
    let others = n - 1;
    let tw = width / others as i32;
    let mut k = 0;
    (0..n)
        .map(|i| {
            if i == focus {
                main
            } else {
                let r = Rect {
                    x: k * tw,
                    y: height - strip_h,
                    w: tw,
                    h: strip_h,
                };
                k += 1;
                r
            }
        })
        .collect()
}

/// The rectangles for `n` tiles in `mode`; `focus` is the speaker's index.
pub fn layout(
    mode: LayoutMode,
    n: usize,
    focus: Option<usize>,
    width: i32,
    height: i32,
) -> Vec<Rect> {
    match (mode, focus) {
        (LayoutMode::Speaker, Some(f)) => speaker(n, f, width, height),
        _ => grid(n, width, height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_fill_the_picture() {
        assert_eq!(
            grid(1, 1280, 720),
            vec![Rect {
                x: 0,
                y: 0,
                w: 1280,
                h: 720
            }]
        );
        let two = grid(2, 1280, 720);
        assert_eq!(two.len(), 2);
        assert_eq!((two[0].w, two[0].h), (640, 720));
        let three = grid(3, 1280, 720);
        assert_eq!(grid_shape(3, 1280, 720), (2, 2));
        assert_eq!(
            three[0],
            Rect {
                x: 0,
                y: 0,
                w: 640,
                h: 360
            }
        );
        assert_eq!(
            three[1],
            Rect {
                x: 640,
                y: 0,
                w: 640,
                h: 360
            }
        );
        // The last, incomplete row is centred.
        assert_eq!(
            three[2],
            Rect {
                x: 320,
                y: 360,
                w: 640,
                h: 360
            }
        );
        assert_eq!(grid_shape(9, 1280, 720), (3, 3));
        assert_eq!(grid_shape(5, 1280, 720), (3, 2));
        assert!(grid(0, 1280, 720).is_empty());
        // No tile leaves the picture.
        for n in 1..=25 {
            for r in grid(n, 1280, 720) {
                assert!(
                    r.x >= 0 && r.y >= 0 && r.x + r.w <= 1280 && r.y + r.h <= 720,
                    "{n}: {r:?}"
                );
            }
        }
    }

    #[test]
    fn speaker_focus() {
        let l = speaker(4, 2, 1280, 720);
        assert_eq!(
            l[2],
            Rect {
                x: 0,
                y: 0,
                w: 1280,
                h: 540
            }
        );
        assert_eq!(
            l[0],
            Rect {
                x: 0,
                y: 540,
                w: 426,
                h: 180
            }
        );
        assert_eq!(l[1].x, 426);
        assert_eq!(l[3].x, 852);
        assert_eq!(
            layout(LayoutMode::Speaker, 4, None, 1280, 720),
            grid(4, 1280, 720)
        );
        assert_eq!(
            layout(LayoutMode::Speaker, 1, Some(0), 1280, 720),
            grid(1, 1280, 720)
        );
    }
}
