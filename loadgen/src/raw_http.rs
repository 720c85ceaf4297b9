//! A minimal HTTP/1.1 keep-alive client for the closed loop: each connection
//! writes a request serialised before the clock started and reads the answer
//! (status line, `content-length`, body). About a tenth of a general client's
//! CPU per request, so on a machine shared with the gateway the load
//! generator takes as little as it can from what it measures.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::requests::Prepared;

/// The bytes of one POST, ready to write.
pub fn serialise(host: SocketAddr, path: &str, request: &Prepared) -> Bytes {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n{}: {}\r\ncontent-length: {}\r\n\r\n",
        request.header.0,
        request.header.1,
        request.body.len()
    );
    let mut bytes = BytesMut::with_capacity(head.len() + request.body.len());
    bytes.extend_from_slice(head.as_bytes());
    bytes.extend_from_slice(&request.body);
    bytes.freeze()
}

/// One keep-alive connection.
pub struct Connection {
    stream: TcpStream,
    buffer: BytesMut,
}

/// An answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: BytesMut::with_capacity(4096),
        })
    }

    pub async fn exchange(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end]).map_err(invalid)?;
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("status line"))?;
        let length = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            })
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .ok_or_else(|| invalid("no content-length"))?;
        while self.buffer.len() < head_end + length {
            self.fill().await?;
        }
        let mut message = self.buffer.split_to(head_end + length);
        let body = message.split_off(head_end).freeze();
        Ok(Answer { status, body })
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}
