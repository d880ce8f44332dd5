//! A small HTTP/1.1 server for the stand-ins: one thread per connection, persistent
//! connections, bodies by `Content-Length` or chunked. A request is handled on its
//! connection's own thread, so a long poll holds up nothing but its own connection.
//!
//! Why not `tiny_http` (used before): its task pool can leave a new connection queued
//! behind a long-lived one. When two connections arrive while a single worker waits, the
//! second wake-up is lost, and that connection is read only once another worker frees up,
//! which a keep-alive connection may never do. On a loaded machine this showed as a
//! `getUpdates` left unanswered until the client gave up (40 s).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The most a request head or body may take.
const MAX_HEAD_BYTES: usize = 64 << 10;
const MAX_BODY_BYTES: usize = 16 << 20;
/// How often an idle connection looks whether the server is stopping.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// One request, answered once through [`Request::respond`] (or broken off with
/// [`Request::respond_raw`]).
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    remote: SocketAddr,
    stream: TcpStream,
    keep_alive: bool,
    /// Set when the connection must close after this request.
    close: Arc<AtomicBool>,
}

impl Request {
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path and query, as sent.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Answers with `status`, a `Content-Type` and `body`.
    pub fn respond(mut self, status: u16, content_type: &str, body: &[u8]) {
        let connection = if self.keep_alive {
            "keep-alive"
        } else {
            "close"
        };
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
            reason(status),
            body.len()
        );
        let written = self
            .stream
            .write_all(head.as_bytes())
            .and_then(|()| self.stream.write_all(body))
            .and_then(|()| self.stream.flush());
        if written.is_err() || !self.keep_alive {
            self.close.store(true, Ordering::SeqCst);
        }
    }

    /// Writes `bytes` as they are and closes the connection (a broken answer).
    pub fn respond_raw(mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(Shutdown::Both);
        self.close.store(true, Ordering::SeqCst);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A server on a loopback port; stops when dropped.
pub struct Server {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and serves every request with `handler`, each connection on
    /// its own thread.
    pub fn start(
        name: &str,
        handler: impl Fn(Request) + Send + Sync + 'static,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let handler = Arc::new(handler);
        let acceptor = {
            let stopping = stopping.clone();
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stopping.load(Ordering::SeqCst) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let (handler, stopping) = (handler.clone(), stopping.clone());
                        std::thread::spawn(move || serve(stream, &*handler, &stopping));
                    }
                })?
        };
        Ok(Server {
            addr,
            stopping,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections; open ones close once idle.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves one connection's requests in order until it closes.
fn serve(stream: TcpStream, handler: &(dyn Fn(Request) + Send + Sync), stopping: &AtomicBool) {
    let Ok(remote) = stream.peer_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_CHECK));
    let Ok(writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let request = match read_request(&mut reader, stopping) {
            Ok(Some(parts)) => parts,
            Ok(None) | Err(_) => return,
        };
        let Ok(stream) = writer.try_clone() else {
            return;
        };
        let close = Arc::new(AtomicBool::new(false));
        let (method, url, headers, body, keep_alive) = request;
        handler(Request {
            method,
            url,
            headers,
            body,
            remote,
            stream,
            keep_alive,
            close: close.clone(),
        });
        if close.load(Ordering::SeqCst) {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

type Parts = (String, String, Vec<(String, String)>, Vec<u8>, bool);

/// Reads the next request; `None` when the connection closed (or the server stops)
/// between requests.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    stopping: &AtomicBool,
) -> std::io::Result<Option<Parts>> {
    // The request line, waiting as long as the client keeps the connection open.
    let mut line = String::new();
    loop {
        match reader.read_line(&mut line) {
            Ok(0) if line.is_empty() => return Ok(None),
            Ok(_) if line.ends_with('\n') => {
                if line.trim().is_empty() {
                    // Stray CRLF between requests.
                    line.clear();
                    continue;
                }
                break;
            }
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {
                if line.is_empty() && stopping.load(Ordering::SeqCst) {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let url = parts.next().unwrap_or("/").to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let mut headers = Vec::new();
    let mut head_bytes = line.len();
    loop {
        let mut header = String::new();
        read_line_patiently(reader, &mut header)?;
        head_bytes += header.len();
        if head_bytes > MAX_HEAD_BYTES {
            return Err(std::io::Error::other("request head too large"));
        }
        let header = header.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let keep_alive = match find("Connection") {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => version != "HTTP/1.0",
    };
    let body = if find("Transfer-Encoding").is_some_and(|t| t.contains("chunked")) {
        read_chunked(reader)?
    } else {
        let length: usize = find("Content-Length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        if length > MAX_BODY_BYTES {
            return Err(std::io::Error::other("request body too large"));
        }
        let mut body = vec![0; length];
        read_exact_patiently(reader, &mut body)?;
        body
    };
    Ok(Some((method, url, headers, body, keep_alive)))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A line within a request (the read timeout only paces the idle check between
/// requests; a request already begun is read to its end).
fn read_line_patiently(
    reader: &mut BufReader<TcpStream>,
    line: &mut String,
) -> std::io::Result<()> {
    loop {
        match reader.read_line(line) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) if line.ends_with('\n') => return Ok(()),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
}

fn read_exact_patiently(reader: &mut BufReader<TcpStream>, buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        read_line_patiently(reader, &mut size_line)?;
        let size_text = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if body.len() + size > MAX_BODY_BYTES {
            return Err(std::io::Error::other("request body too large"));
        }
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                read_line_patiently(reader, &mut trailer)?;
                if trailer.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        read_exact_patiently(reader, &mut body[start..])?;
        let mut crlf = String::new();
        read_line_patiently(reader, &mut crlf)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(server: &Server, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream.write_all(request).unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    #[test]
    fn keep_alive_requests_chunked_bodies_and_a_long_request_beside_others() {
        let server = Server::start("test-http", |request: Request| {
            if request.url() == "/slow" {
                std::thread::sleep(Duration::from_millis(300));
            }
            let body = format!(
                "{} {} {}",
                request.method(),
                request.url(),
                String::from_utf8_lossy(request.body())
            );
            request.respond(200, "text/plain", body.as_bytes());
        })
        .unwrap();
        // Two requests on one connection, the second closing it.
        let answer = exchange(
            &server,
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET /b HTTP/1.1\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.contains("POST /a xyz"), "{answer}");
        assert!(answer.contains("GET /b "), "{answer}");
        let answer = exchange(
            &server,
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert!(answer.contains("POST /c abcde"), "{answer}");
        // A slow request on one connection holds up no other connection.
        let slow = {
            let addr = server.addr();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .write_all(b"GET /slow HTTP/1.1\r\nConnection: close\r\n\r\n")
                    .unwrap();
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                answer
            })
        };
        let answer = exchange(&server, b"GET /quick HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(answer.contains("GET /quick"), "{answer}");
        assert!(slow.join().unwrap().contains("GET /slow"));
    }
}
