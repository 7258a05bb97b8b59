//! Stop sequences over streamed text: text is passed on as soon as it can no longer be
//! the start of a stop sequence, and the answer ends just before the first one.

/// Watches streamed text for stop sequences.
#[derive(Debug, Clone, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    /// Received but not yet passed on: it may be the start of a stop sequence.
    held: String,
    /// Longest stop sequence in bytes.
    longest: usize,
    stopped: bool,
}

impl StopFilter {
    /// A filter for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        Self {
            stops,
            held: String::new(),
            longest,
            stopped: false,
        }
    }

    /// Whether a stop sequence was seen.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Takes the next piece; returns the text that can be passed on now. After a stop
    /// sequence, returns the text before it and then nothing more.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.held.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = first {
            self.stopped = true;
            self.held.truncate(at);
            return std::mem::take(&mut self.held);
        }
        // A stop sequence not yet complete starts less than its length from the end, and
        // (being UTF-8 itself) at a character boundary.
        let mut keep_from = self
            .held
            .len()
            .saturating_sub(self.longest.saturating_sub(1));
        while !self.held.is_char_boundary(keep_from) {
            keep_from += 1;
        }
        let rest = self.held.split_off(keep_from);
        std::mem::replace(&mut self.held, rest)
    }

    /// The text still held back, once the answer has ended without a stop sequence.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut f = StopFilter::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            out.push_str(&f.push(p));
        }
        if !f.stopped() {
            out.push_str(&f.finish());
        }
        (out, f.stopped())
    }

    #[test]
    fn passes_text_without_stops() {
        let mut f = StopFilter::new(vec![]);
        assert_eq!(f.push("abc"), "abc");
        assert_eq!(f.finish(), "");
    }

    #[test]
    fn stop_across_pieces_is_trimmed() {
        assert_eq!(
            run(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
        assert_eq!(run(&["xyz", "b"], &["a", "bc"]), ("a".into(), true));
        assert_eq!(
            run(&["END"], &["hello EN", "d"]),
            ("hello ENd".into(), false)
        );
    }

    #[test]
    fn holds_only_a_possible_prefix_and_respects_utf8() {
        let mut f = StopFilter::new(vec!["ab".into()]);
        assert_eq!(f.push("xxa"), "xx");
        assert_eq!(f.push("é"), "aé");
        assert_eq!(f.push("a"), "");
        assert_eq!(f.finish(), "a");
        let mut f = StopFilter::new(vec!["日本".into()]);
        assert_eq!(f.push("猫猫"), "猫");
        assert_eq!(f.push("日"), "猫");
        assert_eq!(f.push("本"), "");
        assert!(f.stopped());
        assert_eq!(f.push("more"), "");
    }
}
