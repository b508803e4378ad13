//! A `SubscribeResponse` encoded once: the server sends the same feed message to every
//! subscriber of a view, so it encodes it once and each stream copies the bytes.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

use crate::v1;

/// The encoding of a [`v1::SubscribeResponse`]. Cloning shares the bytes. As a
/// [`Message`] it encodes to exactly those bytes, so a stream of these is, on the wire, a
/// stream of `SubscribeResponse`s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedSubscribeResponse(Bytes);

impl EncodedSubscribeResponse {
    /// Encodes `message`.
    pub fn new(message: &v1::SubscribeResponse) -> Self {
        Self(message.encode_to_vec().into())
    }

    /// The message back.
    pub fn message(&self) -> Result<v1::SubscribeResponse, DecodeError> {
        v1::SubscribeResponse::decode(self.0.clone())
    }
}

impl From<v1::SubscribeResponse> for EncodedSubscribeResponse {
    fn from(message: v1::SubscribeResponse) -> Self {
        Self::new(&message)
    }
}

impl Message for EncodedSubscribeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    /// Decoding goes through the message (servers only encode these).
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let mut message = self.message()?;
        message.merge_field(tag, wire_type, buf, ctx)?;
        *self = Self::new(&message);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(frontier_ms: u64) -> v1::SubscribeResponse {
        v1::SubscribeResponse {
            message: Some(v1::subscribe_response::Message::Progress(v1::Progress {
                as_of: Some(v1::AsOf {
                    frontier_ms,
                    offsets: vec![v1::PartitionOffset {
                        topic: "page-views".into(),
                        partition: 3,
                        next_offset: 42,
                    }],
                }),
            })),
        }
    }

    #[test]
    fn encodes_to_the_bytes_of_the_message_and_decodes_back() {
        let message = progress(60_000);
        let encoded = EncodedSubscribeResponse::new(&message);
        assert_eq!(encoded.encode_to_vec(), message.encode_to_vec());
        assert_eq!(encoded.encoded_len(), message.encoded_len());
        assert_eq!(encoded.message().unwrap(), message);
        let decoded = EncodedSubscribeResponse::decode(encoded.encode_to_vec().as_slice());
        assert_eq!(decoded.unwrap(), encoded, "decoded field by field");
    }
}
