//! An incremental `text/event-stream` parser that yields the `data` of each event.
//!
//! Only what a JSON-RPC client needs: `data:` lines are joined with `\n` and handed out when the
//! blank line that ends the event arrives; events with empty data (priming events, keep-alive
//! comments) yield nothing; `id`, `event` and `retry` fields are ignored. Lines may end in `\n`,
//! `\r\n` or `\r`, and chunks may split anywhere, even inside a line ending.

/// Parser state; feed it chunks with [`SseParser::push`].
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current, not yet terminated line.
    line: Vec<u8>,
    /// The data of the event being read.
    data: Vec<u8>,
    /// Whether `data` holds at least one `data:` line (an empty `data:` still counts).
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    after_cr: bool,
}

impl SseParser {
    /// Feeds `chunk`; appends the data of every event it completes to `events`.
    pub fn push(&mut self, chunk: &[u8], events: &mut Vec<Vec<u8>>) {
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let ending = rest[pos];
            rest = &rest[pos + 1..];
            if ending == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            self.end_line(events);
        }
        self.line.extend_from_slice(rest);
    }

    fn end_line(&mut self, events: &mut Vec<Vec<u8>>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            // As in the WHATWG algorithm, an event whose data is empty is not dispatched.
            if self.has_data && !self.data.is_empty() {
                events.push(std::mem::take(&mut self.data));
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.first() == Some(&b':') {
            return; // a comment
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_chunks(input: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for chunk in input.chunks(size) {
            parser.push(chunk, &mut events);
        }
        events
    }

    #[test]
    fn rmcp_shaped_stream_with_priming_event() {
        let input = b"id: 0\nretry: 3000\ndata: \n\nid: 1\ndata: {\"id\":1}\n\n";
        for size in 1..input.len() {
            assert_eq!(
                parse_in_chunks(input, size),
                vec![b"{\"id\":1}".to_vec()],
                "chunk {size}"
            );
        }
    }

    #[test]
    fn crlf_and_cr_line_endings_split_anywhere() {
        let input = b"data: a\r\ndata:b\r\n\r\n: comment\rdata: c\r\r";
        for size in 1..input.len() {
            assert_eq!(
                parse_in_chunks(input, size),
                vec![b"a\nb".to_vec(), b"c".to_vec()],
                "chunk {size}"
            );
        }
    }

    #[test]
    fn unterminated_event_is_not_yielded() {
        assert!(parse_in_chunks(b"data: {\"id\":1}\n", 4).is_empty());
    }

    #[test]
    fn two_empty_data_lines_make_a_newline() {
        assert_eq!(
            parse_in_chunks(b"data\ndata:\n\ndata:\n\n", 3),
            vec![b"\n".to_vec()]
        );
    }
}
