//! gRPC message framing: each message is a compressed flag, its length (u32, big-endian)
//! and itself. Used by the transcoding terminal and the gRPC health checks.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The largest message accepted from an upstream (gRPC's usual receive limit).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// One message as a gRPC frame: an uncompressed flag, its length (u32, big-endian), itself.
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// Why a response body is not a stream of gRPC frames the gateway can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The compressed flag is set; the gateway asks for no compression.
    #[error("the upstream sent a compressed message, which was not asked for")]
    Compressed,
    /// A message is larger than [`MAX_MESSAGE_BYTES`].
    #[error("the upstream sent a message of {0} bytes, over the limit of {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// The body ended inside a frame.
    #[error("the upstream's response ended inside a message")]
    Truncated,
}

/// Splits a body's data into messages as it arrives.
#[derive(Debug, Default)]
pub struct Deframer {
    buffer: BytesMut,
}

impl Deframer {
    /// Adds data.
    pub fn push(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        if self.buffer[0] != 0 {
            return Err(FrameError::Compressed);
        }
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(FrameError::TooLarge(len));
        }
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        self.buffer.advance(5);
        Ok(Some(self.buffer.split_to(len).freeze()))
    }

    /// Checks that nothing is left half-received once the body has ended.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}
