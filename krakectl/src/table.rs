//! Tables drawn the way Krake's krakectl draws them (Python's `texttable`
//! with a border, vertical lines and a header line): columns share the
//! width budget one character at a time, cells are wrapped like Python's
//! `textwrap` (at spaces, after hyphens inside words, long words cut), headers
//! are centred and cells left-aligned.

/// A table: optional header, rows of cells (a cell may hold several lines).
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with a header line.
    pub fn with_header(header: Vec<String>) -> Self {
        Table {
            header: Some(header),
            rows: Vec::new(),
        }
    }

    /// A table without a header (key/value tables).
    pub fn without_header() -> Self {
        Table::default()
    }

    /// Adds a row.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn columns(&self) -> usize {
        self.header
            .iter()
            .chain(&self.rows)
            .map(Vec::len)
            .max()
            .unwrap_or(0)
    }

    /// Draws the table; `max_width` limits the total width (`None`: no limit).
    pub fn render(&self, max_width: Option<usize>) -> String {
        let ncols = self.columns();
        if ncols == 0 {
            return String::new();
        }
        let cell_width = |cell: &str| {
            cell.split('\n')
                .map(|l| l.chars().count())
                .max()
                .unwrap_or(0)
        };
        let mut widths = vec![0usize; ncols];
        for row in self.header.iter().chain(&self.rows) {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell_width(cell));
            }
        }
        let deco = 3 * (ncols - 1) + 4;
        if let Some(max) = max_width {
            let content: usize = widths.iter().sum();
            if content + deco > max && max >= ncols + deco {
                let mut available = max - deco;
                let mut shrunk = vec![0usize; ncols];
                let mut i = 0;
                while available > 0 && shrunk != widths {
                    if shrunk[i] < widths[i] {
                        shrunk[i] += 1;
                        available -= 1;
                    }
                    i = (i + 1) % ncols;
                }
                widths = shrunk;
            }
        }
        let border = |fill: char| {
            let mut line = String::from("+");
            for width in &widths {
                line.extend(std::iter::repeat_n(fill, width + 2));
                line.push('+');
            }
            line.push('\n');
            line
        };
        let mut out = border('-');
        if let Some(header) = &self.header {
            out.push_str(&draw_row(header, &widths, true));
            out.push_str(&border('='));
        }
        for row in &self.rows {
            out.push_str(&draw_row(row, &widths, false));
        }
        out.push_str(&border('-'));
        out
    }
}

fn draw_row(row: &[String], widths: &[usize], centred: bool) -> String {
    let cells: Vec<Vec<String>> = widths
        .iter()
        .enumerate()
        .map(|(i, &width)| {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            let mut lines = Vec::new();
            for line in cell.split('\n') {
                if line.trim().is_empty() {
                    lines.push(String::new());
                } else {
                    lines.extend(wrap(line, width));
                }
            }
            lines
        })
        .collect();
    let height = cells.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut out = String::new();
    for index in 0..height {
        out.push('|');
        for (cell, &width) in cells.iter().zip(widths) {
            let text = cell.get(index).map(String::as_str).unwrap_or("");
            let fill = width.saturating_sub(text.chars().count());
            out.push(' ');
            if centred {
                out.extend(std::iter::repeat_n(' ', fill / 2));
                out.push_str(text);
                out.extend(std::iter::repeat_n(' ', fill - fill / 2));
            } else {
                out.push_str(text);
                out.extend(std::iter::repeat_n(' ', fill));
            }
            out.push_str(" |");
        }
        out.push('\n');
    }
    out
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic()
}

/// Splits a line into chunks as Python's `TextWrapper` does: runs of
/// whitespace, and words split after a hyphen that has two letters (or
/// letter-hyphen-letter) before it and a letter after it.
fn chunks(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            if i > start {
                out.push(chars[start..i].iter().collect());
            }
            let ws_start = i;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            out.push(chars[ws_start..i].iter().collect());
            start = i;
            continue;
        }
        if chars[i] == '-' && i > start {
            let before2 = i >= 2 && is_letter(chars[i - 1]) && is_letter(chars[i - 2]);
            let before_lhl =
                i >= 3 && is_letter(chars[i - 1]) && chars[i - 2] == '-' && is_letter(chars[i - 3]);
            let after = chars.get(i + 1).copied().is_some_and(is_letter)
                || (chars.get(i + 1) == Some(&'-')
                    && chars.get(i + 2).copied().is_some_and(is_letter));
            if (before2 || before_lhl) && after {
                out.push(chars[start..=i].iter().collect());
                start = i + 1;
            }
        }
        i += 1;
    }
    if start < chars.len() {
        out.push(chars[start..].iter().collect());
    }
    out
}

/// Wraps one line to `width` columns like Python's `textwrap.wrap`.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let text: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    let mut chunks: Vec<Vec<char>> = chunks(&text)
        .into_iter()
        .map(|c| c.chars().collect())
        .collect();
    chunks.reverse();
    let mut lines: Vec<String> = Vec::new();
    while !chunks.is_empty() {
        let mut line: Vec<Vec<char>> = Vec::new();
        let mut length = 0;
        if chunks.last().is_some_and(|c| c.iter().all(|c| *c == ' ')) && !lines.is_empty() {
            chunks.pop();
        }
        while let Some(chunk) = chunks.last() {
            if length + chunk.len() <= width {
                length += chunk.len();
                line.push(chunks.pop().unwrap_or_default());
            } else {
                break;
            }
        }
        if let Some(chunk) = chunks.last_mut() {
            if chunk.len() > width {
                let space = width.saturating_sub(length).max(1);
                let mut end = space;
                if let Some(hyphen) = chunk[..space.min(chunk.len())]
                    .iter()
                    .rposition(|&c| c == '-')
                {
                    if hyphen > 0 && chunk[..hyphen].iter().any(|&c| c != '-') {
                        end = hyphen + 1;
                    }
                }
                let rest = chunk.split_off(end);
                line.push(std::mem::replace(chunk, rest));
            }
        }
        while line.last().is_some_and(|c| c.iter().all(|c| *c == ' ')) {
            line.pop();
        }
        if !line.is_empty() {
            lines.push(line.concat().into_iter().collect());
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_like_python_textwrap() {
        assert_eq!(wrap("fake-cluster", 10), ["fake-", "cluster"]);
        assert_eq!(wrap("2026-11-23 00:01:52", 10), ["2026-11-23", "00:01:52"]);
        assert_eq!(
            wrap("2026-11-23 00:01:52", 9),
            ["2026-11-", "23", "00:01:52"]
        );
        assert_eq!(wrap("system:admin", 10), ["system:adm", "in"]);
        assert_eq!(wrap("allowed_values", 5), ["allow", "ed_va", "lues"]);
        assert_eq!(wrap("namespace", 6), ["namesp", "ace"]);
        assert_eq!(wrap("a b  c", 3), ["a b", "c"]);
    }

    #[test]
    fn list_tables_share_the_width_as_texttable_does() {
        let header = [
            "name",
            "namespace",
            "labels",
            "created",
            "modified",
            "deleted",
            "state",
        ];
        let mut table = Table::with_header(header.iter().map(|s| s.to_string()).collect());
        table.push(
            [
                "fake-cluster",
                "testing",
                "None",
                "2026-11-23 00:01:52",
                "2026-11-23 00:01:52",
                "None",
                "PENDING",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        );
        let expected = "\
+------------+-----------+--------+------------+-----------+---------+---------+
|    name    | namespace | labels |  created   | modified  | deleted |  state  |
+============+===========+========+============+===========+=========+=========+
| fake-      | testing   | None   | 2026-11-23 | 2026-11-  | None    | PENDING |
| cluster    |           |        | 00:01:52   | 23        |         |         |
|            |           |        |            | 00:01:52  |         |         |
+------------+-----------+--------+------------+-----------+---------+---------+
";
        assert_eq!(table.render(Some(80)), expected);
    }

    #[test]
    fn ten_column_headers_wrap() {
        let header = [
            "name",
            "namespace",
            "labels",
            "created",
            "modified",
            "deleted",
            "provider",
            "min",
            "max",
            "allowed_values",
        ];
        let table = Table::with_header(header.iter().map(|s| s.to_string()).collect());
        let expected = "\
+------+--------+--------+--------+--------+-------+-------+-----+-----+-------+
| name | namesp | labels | create | modifi | delet | provi | min | max | allow |
|      |  ace   |        |   d    |   ed   |  ed   |  der  |     |     | ed_va |
|      |        |        |        |        |       |       |     |     | lues  |
+======+========+========+========+========+=======+=======+=====+=====+=======+
+------+--------+--------+--------+--------+-------+-------+-----+-----+-------+
";
        assert_eq!(table.render(Some(80)), expected);
    }
}
