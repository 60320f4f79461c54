//! The gRPC codec of every generated server and client: prost's, with
//! small per-call buffers.
//!
//! tonic gives each call a fresh encode buffer and decode buffer of 8 KiB.
//! Nearly all of etcd's requests and responses are a few hundred bytes, and
//! an 8 KiB allocation misses the allocator's per-thread cache, so under
//! load every call paid for two slow allocations. Here the buffers start at
//! 1 KiB (served from that cache) and grow as a message needs; nothing on
//! the wire changes.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Bytes a call's buffers start with.
pub const BUFFER_SIZE: usize = 1024;
/// tonic's default: how much a streaming encoder buffers before yielding.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding with [`BUFFER_SIZE`] buffers.
#[derive(Debug, Clone)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}
