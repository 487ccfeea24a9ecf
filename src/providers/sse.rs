//! A minimal Server-Sent Events decoder for upstream streams: bytes in, complete events out.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no event boundary. Each push scans only what is new
    /// (less 3 bytes, for a boundary split across pushes): rescanning from the start made one
    /// large event arriving in small pieces cost O(n²) — the fuzzer's slowest input, and a 16 MiB
    /// event dripped in 1 KiB segments would have kept a core busy for minutes.
    scanned: usize,
}

/// An upstream that sends one event larger than this is broken or hostile.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

impl SseDecoder {
    /// Feeds bytes; returns every event completed by them. `Err` when an event grows past the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buf, self.scanned.saturating_sub(3)) {
            let raw: Vec<u8> = self.buf.drain(..end + sep).collect();
            self.scanned = 0;
            if let Some(ev) = parse_event(&String::from_utf8_lossy(&raw[..end])) {
                out.push(ev);
            }
        }
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err("upstream event exceeds 16 MiB".into());
        }
        Ok(out)
    }

    /// Whatever is left when the stream ends (a last event without its blank line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let rest = std::mem::take(&mut self.buf);
        self.scanned = 0;
        parse_event(&String::from_utf8_lossy(&rest))
    }
}

/// The first blank line at or after `from`: (where it starts, its length).
fn find_boundary(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    for i in from..buf.len() {
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        if buf[i..].starts_with(b"\n\n") || buf[i..].starts_with(b"\r\r") {
            return Some((i, 2));
        }
    }
    None
}

fn parse_event(block: &str) -> Option<SseEvent> {
    let mut ev = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => ev.event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() && ev.event.is_none() {
        return None;
    }
    ev.data = data.join("\n");
    Some(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_arbitrary_chunk_boundaries() {
        let wire = b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: line1\ndata: line2\r\n\r\ndata: [DONE]\n\n";
        for cut in 1..wire.len() {
            let mut d = SseDecoder::default();
            let mut evs = d.push(&wire[..cut]).unwrap();
            evs.extend(d.push(&wire[cut..]).unwrap());
            assert_eq!(evs.len(), 3, "cut at {cut}");
            assert_eq!(evs[0].event.as_deref(), Some("message_start"));
            assert_eq!(evs[1].data, "line1\nline2");
            assert_eq!(evs[2].data, "[DONE]");
        }
    }

    #[test]
    fn boundaries_split_across_pushes_are_found_when_the_scan_resumes() {
        // every byte-wise split of a boundary is still found, with the scan resuming mid-buffer
        for sep in ["\n\n", "\r\n\r\n", "\r\r"] {
            let mut d = SseDecoder::default();
            let wire = format!("data: {}{sep}data: b{sep}", "a".repeat(1000));
            let mut evs = Vec::new();
            for b in wire.as_bytes().chunks(1) {
                evs.extend(d.push(b).unwrap());
            }
            assert_eq!(evs.len(), 2, "{sep:?}");
            assert_eq!(evs[0].data.len(), 1000);
            assert_eq!(evs[1].data, "b");
        }
    }
}
