//! Raw HTTP/1.1 over a blocking socket, so a test controls every byte a
//! hostile client would send: send a request, read the answer until the
//! server closes, pick out its status and JSON error code.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A loopback address nobody listens on right now (bound, then released).
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// Sends `request` whole and reads the answer until the gateway closes (or 5 s).
pub fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    // The gateway may answer and close before reading everything: ignore write errors.
    let _ = stream.write_all(request);
    read_answer(&mut stream)
}

/// Reads whatever arrives until the peer closes or 5 s pass.
pub fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw answer (0 when there is none).
pub fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The `error` field of a raw answer's JSON body, if it has one.
pub fn error_code(answer: &str) -> Option<String> {
    let body = answer.split_once("\r\n\r\n")?.1;
    let json: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    json["error"].as_str().map(str::to_owned)
}

/// A header line `name: value`.
pub fn header(name: &str, value: &str) -> String {
    format!("{name}: {value}\r\n")
}
