//! Stop strings over streamed text: text that might begin a stop string is
//! held back until it is known not to.

/// Cuts a stream of text at the first stop string.
#[derive(Debug, Default)]
pub struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    /// A filter for `stops` (none: passes everything through).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            pending: String::new(),
        }
    }

    /// Adds `text`; returns the text that can be sent now, and whether a stop
    /// string was met (the text is then cut before it, and the stream ends).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        let hold = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .filter(|k| s.is_char_boundary(*k))
                    .find(|k| self.pending.ends_with(&s[..*k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// The held-back rest, at the end of the stream.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_across_pieces_and_holds_back_only_possible_starts() {
        let mut f = StopFilter::new(vec!["END".into(), "\n\n".into()]);
        assert_eq!(f.push("Hello E"), ("Hello ".to_string(), false));
        assert_eq!(f.push("x"), ("Ex".to_string(), false));
        assert_eq!(f.push(" wor"), (" wor".to_string(), false));
        assert_eq!(f.push("ldEN"), ("ld".to_string(), false));
        assert_eq!(f.push("D more"), (String::new(), true));
        let mut g = StopFilter::new(vec!["é!".into()]);
        assert_eq!(g.push("caf"), ("caf".to_string(), false));
        assert_eq!(g.push("é"), (String::new(), false));
        assert_eq!(g.finish(), "é");
        let mut none = StopFilter::new(Vec::new());
        assert_eq!(none.push("abc"), ("abc".to_string(), false));
    }
}
