//! Report cleaning, sentence splitting and tokenisation for the rule labeler. Text is ASCII-lower-cased in
//! place, so byte offsets into the cleaned text are offsets into the original.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Letters and digits.
    Word,
    /// `,` `;` `:` `(` `)` `/`
    Punct,
}

/// A token: byte span in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    /// Byte offset.
    pub start: usize,
    /// Byte offset after it.
    pub end: usize,
    /// Word or punctuation.
    pub kind: TokenKind,
}

/// A sentence: byte span and its tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sentence {
    /// Byte offset.
    pub start: usize,
    /// Byte offset after it.
    pub end: usize,
    /// Its tokens.
    pub tokens: Vec<Token>,
}

/// Lower-cases ASCII letters and replaces control characters with spaces; byte offsets are preserved.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                ' '
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b >= 0x80
}

/// Splits cleaned text into sentences. A sentence ends at `.`, `?` or `!` followed by a space or the end of the
/// text (so decimals such as `2.5` do not split), and at a blank line. Numbered-list markers (`1.`) become
/// sentences of their own with no words of interest.
pub fn sentences(original: &str, cleaned: &str) -> Vec<Sentence> {
    let b = cleaned.as_bytes();
    let raw = original.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let end_mark = matches!(c, b'.' | b'?' | b'!')
            && next.is_none_or(|n| n == b' ' || raw[i + 1] == b'\n' || raw[i + 1] == b'\r');
        let blank_line = raw[i] == b'\n' && {
            let mut j = i + 1;
            while j < raw.len() && matches!(raw[j], b' ' | b'\t' | b'\r') {
                j += 1;
            }
            j < raw.len() && raw[j] == b'\n'
        };
        if end_mark || blank_line {
            push_sentence(&mut out, cleaned, start, i + 1);
            start = i + 1;
        }
        i += 1;
    }
    push_sentence(&mut out, cleaned, start, b.len());
    out
}

fn push_sentence(out: &mut Vec<Sentence>, text: &str, start: usize, end: usize) {
    let tokens = tokenize(text, start, end);
    if !tokens.is_empty() {
        out.push(Sentence { start, end, tokens });
    }
}

/// Tokens of `text[start..end]`: words (letters, digits, inner `-` and `'`) and clause punctuation.
pub fn tokenize(text: &str, start: usize, end: usize) -> Vec<Token> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = start;
    while i < end {
        let c = b[i];
        if word_byte(c) {
            let s = i;
            while i < end
                && (word_byte(b[i])
                    || (matches!(b[i], b'-' | b'\'') && i + 1 < end && word_byte(b[i + 1])))
            {
                i += 1;
            }
            out.push(Token {
                start: s,
                end: i,
                kind: TokenKind::Word,
            });
        } else {
            if matches!(c, b',' | b';' | b':' | b'(' | b')' | b'/') {
                out.push(Token {
                    start: i,
                    end: i + 1,
                    kind: TokenKind::Punct,
                });
            }
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(t: &str) -> Vec<String> {
        let c = clean(t);
        sentences(t, &c)
            .iter()
            .map(|s| c[s.start..s.end].trim().to_string())
            .collect()
    }

    #[test]
    fn splits_sentences_lists_and_paragraphs_but_not_decimals() {
        assert_eq!(
            split("No effusion. Mild edema"),
            vec!["no effusion.", "mild edema"]
        );
        assert_eq!(split("A 2.5 cm nodule. B"), vec!["a 2.5 cm nodule.", "b"]);
        assert_eq!(
            split("1. Cardiomegaly. 2. Edema."),
            vec!["1.", "cardiomegaly.", "2.", "edema."]
        );
        assert_eq!(split("first line\n\nsecond"), vec!["first line", "second"]);
        assert_eq!(split("Effusion?\nNo."), vec!["effusion?", "no."]);
        assert!(split("").is_empty());
    }

    #[test]
    fn tokens_keep_hyphenated_words_and_clause_punctuation() {
        let t = "plate-like atelectasis, left; (small)";
        let c = clean(t);
        let toks: Vec<&str> = tokenize(&c, 0, c.len())
            .iter()
            .map(|k| &c[k.start..k.end])
            .collect();
        assert_eq!(
            toks,
            vec![
                "plate-like",
                "atelectasis",
                ",",
                "left",
                ";",
                "(",
                "small",
                ")"
            ]
        );
    }

    #[test]
    fn non_ascii_and_control_characters_keep_offsets() {
        let t = "Épanchement\u{0}pleural. Œdème";
        let c = clean(t);
        assert_eq!(c.len(), t.len());
        assert_eq!(sentences(t, &c).len(), 2);
    }
}
