//! A minimal Server-Sent Events decoder for upstream streams: bytes in, complete events out.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
}

/// An upstream that sends one event larger than this is broken or hostile.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

impl SseDecoder {
    /// Feeds bytes; returns every event completed by them. `Err` when an event grows past the limit.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buf) {
            let raw: Vec<u8> = self.buf.drain(..end + sep).collect();
            if let Some(ev) = parse_event(&String::from_utf8_lossy(&raw[..end])) {
                out.push(ev);
            }
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err("upstream event exceeds 16 MiB".into());
        }
        Ok(out)
    }

    /// Whatever is left when the stream ends (a last event without its blank line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let rest = std::mem::take(&mut self.buf);
        parse_event(&String::from_utf8_lossy(&rest))
    }
}

fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
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
}
