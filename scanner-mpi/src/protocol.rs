//! The messages the ranks of a job send each other while they share work, their one codec, and
//! the [`Transport`] that carries them as bytes.
//!
//! A message is one byte naming its kind, then its body (integers little-endian):
//!
//! | kind | message        | body                                                        |
//! |------|----------------|-------------------------------------------------------------|
//! | 1    | `StealRequest` |                                                             |
//! | 2    | `Work`         | u32 item count, then each item as [`Work::encode`] writes it |
//! | 3    | `NoWork`       |                                                             |
//! | 4    | `Token`        | u8 color (1 black, 0 white), i64 sum                        |
//! | 5    | `Terminate`    |                                                             |
//! | 6    | `Done`         |                                                             |
//! | 7    | `Exit`         |                                                             |
//! | 8    | `Progress`     | u8 passive, u64 entries, u64 apparent bytes, u64 errors     |
//!
//! Every rank of a job runs the same binary, so the format has no version. What each message
//! means, and who sends it when, is in [`crate::coordinator`].

use crate::pool::Work;
use crate::progress::RankProgress;

/// Point-to-point messaging between the ranks of one job.
pub trait Transport {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Sends without waiting for the receiver to act on it.
    fn send(&mut self, dest: usize, msg: Vec<u8>);
    /// A message addressed to this rank, if one has arrived.
    fn try_recv(&mut self) -> Option<(usize, Vec<u8>)>;
}

/// The color of a rank or of the token in Safra's algorithm: black once work arrived since the
/// token last passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    White,
    Black,
}

/// The termination-detection token, passed from rank to rank down to rank 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub color: Color,
    /// Work messages sent minus received, summed over the ranks the token has passed.
    pub sum: i64,
}

/// One message between two ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<W> {
    /// An idle rank asks for work.
    StealRequest,
    /// The answer to a steal request: some of the victim's items. The only message that counts
    /// for termination detection.
    Work(Vec<W>),
    /// The answer to a steal request from a rank with nothing to give.
    NoWork,
    /// Safra's token, on its way around the ring.
    Token(Token),
    /// Rank 0 to every other rank: the end is detected.
    Terminate,
    /// A rank to rank 0 after `Terminate`: its last steal request is answered.
    Done,
    /// Rank 0 to every other rank, once all are done: nobody will send anything any more.
    Exit,
    /// A rank's counts for rank 0's progress reports.
    Progress {
        /// The rank has no work.
        passive: bool,
        progress: RankProgress,
    },
}

/// The first byte of each message.
mod kind {
    pub const STEAL_REQUEST: u8 = 1;
    pub const WORK: u8 = 2;
    pub const NO_WORK: u8 = 3;
    pub const TOKEN: u8 = 4;
    pub const TERMINATE: u8 = 5;
    pub const DONE: u8 = 6;
    pub const EXIT: u8 = 7;
    pub const PROGRESS: u8 = 8;
}

/// A message that does not decode: a peer running other code, or a bug.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("an empty message")]
    Empty,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("a {kind} message with a body of {len} bytes")]
    BodyLength { kind: &'static str, len: usize },
    #[error("a work message without its item count")]
    NoItemCount,
    #[error("item {index} of a work message of {count} items is malformed")]
    Item { index: usize, count: usize },
    #[error("{0} bytes after the last item of a work message")]
    TrailingBytes(usize),
}

const TOKEN_BODY: usize = 1 + 8;
const PROGRESS_BODY: usize = 1 + 3 * 8;

impl<W: Work> Message<W> {
    fn kind(&self) -> u8 {
        match self {
            Self::StealRequest => kind::STEAL_REQUEST,
            Self::Work(_) => kind::WORK,
            Self::NoWork => kind::NO_WORK,
            Self::Token(_) => kind::TOKEN,
            Self::Terminate => kind::TERMINATE,
            Self::Done => kind::DONE,
            Self::Exit => kind::EXIT,
            Self::Progress { .. } => kind::PROGRESS,
        }
    }

    /// Bytes [`Message::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Work(items) => 4 + items.iter().map(Work::encoded_len).sum::<usize>(),
            Self::Token(_) => TOKEN_BODY,
            Self::Progress { .. } => PROGRESS_BODY,
            Self::StealRequest | Self::NoWork | Self::Terminate | Self::Done | Self::Exit => 0,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.push(self.kind());
        match self {
            Self::Work(items) => {
                out.extend_from_slice(&(items.len() as u32).to_le_bytes());
                for item in items {
                    item.encode(&mut out);
                }
            }
            Self::Token(token) => {
                out.push(u8::from(token.color == Color::Black));
                out.extend_from_slice(&token.sum.to_le_bytes());
            }
            Self::Progress { passive, progress } => {
                out.push(u8::from(*passive));
                for n in [progress.entries, progress.apparent_bytes, progress.errors] {
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
            Self::StealRequest | Self::NoWork | Self::Terminate | Self::Done | Self::Exit => {}
        }
        out
    }

    pub fn decode(message: &[u8]) -> Result<Self, DecodeError> {
        let (&kind, body) = message.split_first().ok_or(DecodeError::Empty)?;
        let wrong_length = |kind: &'static str| DecodeError::BodyLength {
            kind,
            len: body.len(),
        };
        let bare = |message: Self, kind: &'static str| {
            body.is_empty()
                .then_some(message)
                .ok_or_else(|| wrong_length(kind))
        };
        match kind {
            kind::STEAL_REQUEST => bare(Self::StealRequest, "steal request"),
            kind::WORK => decode_items(body).map(Self::Work),
            kind::NO_WORK => bare(Self::NoWork, "no-work"),
            kind::TOKEN => {
                let body: &[u8; TOKEN_BODY] = body.try_into().map_err(|_| wrong_length("token"))?;
                let [color, sum @ ..] = body;
                Ok(Self::Token(Token {
                    color: if *color == 1 {
                        Color::Black
                    } else {
                        Color::White
                    },
                    sum: i64::from_le_bytes(*sum),
                }))
            }
            kind::TERMINATE => bare(Self::Terminate, "terminate"),
            kind::DONE => bare(Self::Done, "done"),
            kind::EXIT => bare(Self::Exit, "exit"),
            kind::PROGRESS => {
                let body: &[u8; PROGRESS_BODY] =
                    body.try_into().map_err(|_| wrong_length("progress"))?;
                let [passive, counts @ ..] = body;
                let count =
                    |i: usize| u64::from_le_bytes(std::array::from_fn(|b| counts[8 * i + b]));
                Ok(Self::Progress {
                    passive: *passive == 1,
                    progress: RankProgress {
                        entries: count(0),
                        apparent_bytes: count(1),
                        errors: count(2),
                    },
                })
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

fn decode_items<W: Work>(body: &[u8]) -> Result<Vec<W>, DecodeError> {
    let (count, mut rest) = body
        .split_first_chunk::<4>()
        .ok_or(DecodeError::NoItemCount)?;
    let count = u32::from_le_bytes(*count) as usize;
    // A count is not trusted to size memory: each item takes at least one byte.
    let mut items = Vec::with_capacity(count.min(rest.len()));
    for index in 0..count {
        items.push(W::decode(&mut rest).ok_or(DecodeError::Item { index, count })?);
    }
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A work item of a varying length: `n` bytes of `n`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Item(u8);

    impl Work for Item {
        fn encoded_len(&self) -> usize {
            1 + usize::from(self.0)
        }
        fn encode(&self, out: &mut Vec<u8>) {
            out.push(self.0);
            out.extend(std::iter::repeat_n(self.0, usize::from(self.0)));
        }
        fn decode(buf: &mut &[u8]) -> Option<Self> {
            let (&n, rest) = buf.split_first()?;
            let body = rest.get(..usize::from(n))?;
            if body.iter().any(|&b| b != n) {
                return None;
            }
            *buf = &rest[usize::from(n)..];
            Some(Self(n))
        }
    }

    fn every_kind() -> Vec<Message<Item>> {
        vec![
            Message::StealRequest,
            Message::Work(vec![Item(0), Item(3), Item(1)]),
            Message::Work(Vec::new()),
            Message::NoWork,
            Message::Token(Token {
                color: Color::Black,
                sum: -3,
            }),
            Message::Terminate,
            Message::Done,
            Message::Exit,
            Message::Progress {
                passive: true,
                progress: RankProgress {
                    entries: 1 << 40,
                    apparent_bytes: u64::MAX,
                    errors: 7,
                },
            },
        ]
    }

    #[test]
    fn token_encoding_round_trips() {
        for t in [
            Token {
                color: Color::White,
                sum: 0,
            },
            Token {
                color: Color::Black,
                sum: -42,
            },
        ] {
            let m = Message::<Item>::Token(t).encode();
            assert_eq!(m[0], kind::TOKEN);
            assert_eq!(Message::decode(&m), Ok(Message::<Item>::Token(t)));
        }
    }

    #[test]
    fn every_message_round_trips_at_its_encoded_length() {
        for m in every_kind() {
            let bytes = m.encode();
            assert_eq!(bytes.len(), m.encoded_len(), "{m:?}");
            assert_eq!(Message::decode(&bytes), Ok(m));
        }
    }

    #[test]
    fn the_wire_format_is_the_documented_one() {
        let token = Message::<Item>::Token(Token {
            color: Color::Black,
            sum: -2,
        });
        assert_eq!(
            token.encode(),
            [4, 1, 254, 255, 255, 255, 255, 255, 255, 255]
        );
        let work = Message::Work(vec![Item(2)]);
        assert_eq!(work.encode(), [2, 1, 0, 0, 0, 2, 2, 2]);
        let tags: Vec<u8> = every_kind().iter().map(|m| m.encode()[0]).collect();
        assert_eq!(tags, [1, 2, 2, 3, 4, 5, 6, 7, 8]);
        let progress = Message::<Item>::Progress {
            passive: false,
            progress: RankProgress {
                entries: 1,
                apparent_bytes: 2,
                errors: 3,
            },
        };
        let bytes = progress.encode();
        assert_eq!(bytes.len(), 2 + 3 * 8);
        assert_eq!(&bytes[..3], [8, 0, 1]);
    }

    #[test]
    fn every_cut_or_padded_message_is_refused() {
        for m in every_kind() {
            let bytes = m.encode();
            for cut in 0..bytes.len() {
                assert!(
                    Message::<Item>::decode(&bytes[..cut]).is_err(),
                    "{m:?} cut to {cut} bytes"
                );
            }
            let mut padded = bytes.clone();
            padded.push(0);
            assert!(Message::<Item>::decode(&padded).is_err(), "{m:?} padded");
        }
        assert_eq!(
            Message::<Item>::decode(&[9]),
            Err(DecodeError::UnknownKind(9))
        );
        assert_eq!(
            Message::<Item>::decode(&[2, 2, 0, 0, 0, 1, 1, 5]),
            Err(DecodeError::Item { index: 1, count: 2 })
        );
    }
}
