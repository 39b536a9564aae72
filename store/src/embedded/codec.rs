//! Binary encoding of the records the embedded store keeps in redb: key records (value plus
//! revisions and lease), per-revision event lists (the watch history) and lease records.
//!
//! The format is private to the embedded backend: little-endian integers and length-prefixed
//! byte strings, versioned by a leading tag byte so that a later change can migrate it.

use crate::{KeyValue, LeaseId, Revision, WatchEvent};

/// Format version written in front of every record.
const VERSION: u8 = 1;

/// A record that could not be decoded (a corrupted or foreign data file).
#[derive(Debug, thiserror::Error)]
#[error("corrupt embedded store record: {0}")]
pub struct CodecError(pub &'static str);

/// What the `kv` table holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRecord {
    /// Revision at which the key was created.
    pub create_revision: Revision,
    /// Revision of the last change.
    pub mod_revision: Revision,
    /// Lease the key is bound to (0 = none).
    pub lease: LeaseId,
    /// Raw value.
    pub value: Vec<u8>,
}

impl KvRecord {
    /// Turns the record into the public [`KeyValue`] for `key`.
    pub fn into_key_value(self, key: String) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: (self.lease != 0).then_some(self.lease),
        }
    }

    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25 + self.value.len());
        out.push(VERSION);
        put_i64(&mut out, self.create_revision);
        put_i64(&mut out, self.mod_revision);
        put_i64(&mut out, self.lease);
        out.extend_from_slice(&self.value);
        out
    }

    /// Decodes a record written by [`KvRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        r.version()?;
        let create_revision = r.i64()?;
        let mod_revision = r.i64()?;
        let lease = r.i64()?;
        Ok(Self {
            create_revision,
            mod_revision,
            lease,
            value: r.rest().to_vec(),
        })
    }
}

/// What the `leases` table holds for one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Time to live, in milliseconds.
    pub ttl_ms: i64,
    /// Wall-clock deadline, in milliseconds since the Unix epoch.
    pub deadline_ms: i64,
}

impl LeaseRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17);
        out.push(VERSION);
        put_i64(&mut out, self.ttl_ms);
        put_i64(&mut out, self.deadline_ms);
        out
    }

    /// Decodes a record written by [`LeaseRecord::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        r.version()?;
        Ok(Self {
            ttl_ms: r.i64()?,
            deadline_ms: r.i64()?,
        })
    }
}

/// Encodes the events of one revision.
pub fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(VERSION);
    put_u32(&mut out, events.len());
    for event in events {
        match event {
            WatchEvent::Put(kv) => {
                out.push(0);
                put_bytes(&mut out, kv.key.as_bytes());
                put_i64(&mut out, kv.create_revision);
                put_i64(&mut out, kv.mod_revision);
                put_i64(&mut out, kv.lease.unwrap_or(0));
                put_bytes(&mut out, &kv.value);
            }
            WatchEvent::Delete { key, mod_revision } => {
                out.push(1);
                put_bytes(&mut out, key.as_bytes());
                put_i64(&mut out, *mod_revision);
            }
        }
    }
    out
}

/// Decodes the events written by [`encode_events`].
pub fn decode_events(bytes: &[u8]) -> Result<Vec<WatchEvent>, CodecError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let n = r.u32()? as usize;
    let mut events = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let tag = r.u8()?;
        let key =
            String::from_utf8(r.bytes()?.to_vec()).map_err(|_| CodecError("key not UTF-8"))?;
        match tag {
            0 => {
                let create_revision = r.i64()?;
                let mod_revision = r.i64()?;
                let lease = r.i64()?;
                let value = r.bytes()?.to_vec();
                events.push(WatchEvent::Put(KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision,
                    lease: (lease != 0).then_some(lease),
                }));
            }
            1 => events.push(WatchEvent::Delete {
                key,
                mod_revision: r.i64()?,
            }),
            _ => return Err(CodecError("unknown event tag")),
        }
    }
    Ok(events)
}

/// Key of the `lease_keys` index: the lease id (big-endian, so one lease's keys are
/// contiguous) followed by the key.
pub fn lease_key(lease: LeaseId, key: &str) -> Vec<u8> {
    let mut out = lease_prefix(lease).to_vec();
    out.extend_from_slice(key.as_bytes());
    out
}

/// Prefix of every `lease_keys` entry of `lease`.
pub fn lease_prefix(lease: LeaseId) -> [u8; 8] {
    lease.to_be_bytes()
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: usize) {
    // Lengths are bounded by redb's own value limit (< 4 GiB), so this never truncates.
    out.extend_from_slice(&u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.buf.len() < n {
            return Err(CodecError("record truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn version(&mut self) -> Result<(), CodecError> {
        match self.u8()? {
            VERSION => Ok(()),
            _ => Err(CodecError("unknown record version")),
        }
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, CodecError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_record_round_trips() {
        let rec = KvRecord {
            create_revision: 3,
            mod_revision: 9,
            lease: 42,
            value: b"v".to_vec(),
        };
        assert_eq!(KvRecord::decode(&rec.encode()).ok(), Some(rec));
    }

    #[test]
    fn events_round_trip() {
        let events = vec![
            WatchEvent::Put(KeyValue {
                key: "a".into(),
                value: vec![1, 2, 3],
                create_revision: 2,
                mod_revision: 5,
                lease: None,
            }),
            WatchEvent::Delete {
                key: "b".into(),
                mod_revision: 5,
            },
        ];
        assert_eq!(decode_events(&encode_events(&events)).ok(), Some(events));
    }

    #[test]
    fn truncated_record_is_an_error() {
        assert!(decode_events(&[VERSION, 1, 0, 0, 0, 0]).is_err());
        assert!(KvRecord::decode(&[VERSION, 1]).is_err());
    }
}
