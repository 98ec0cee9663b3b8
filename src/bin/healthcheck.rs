//! The container image's health check: `GET /-/healthy` on pulsewatch's own listener, exit 0 on
//! a 200 answer and 1 on anything else (refused, timed out, another status).
//!
//! The runtime image (distroless) has no shell and no curl, and pulsewatch has no health-check
//! subcommand, so the crate has this second binary, `pulsewatch-healthcheck`: std only (it does
//! not link the library, so it stays small), installed in the image as
//! `/usr/local/bin/healthcheck` and run from `HEALTHCHECK`. Plain HTTP only: with TLS or basic
//! auth in `--web.config.file`, use the orchestrator's probes (which can send headers and speak
//! TLS) and disable this check.
//!
//! Usage: `pulsewatch-healthcheck [HOST:PORT] [PATH]`; defaults:
//! `$PULSEWATCH_HEALTHCHECK_ADDRESS` or `127.0.0.1:9464`, and `/-/healthy`.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Bound on connecting, and on each read and write (Docker's own timeout is the backstop).
const TIMEOUT: Duration = Duration::from_secs(3);

fn check(address: &str, path: &str) -> Result<(), String> {
    let addr = address
        .to_socket_addrs()
        .map_err(|err| format!("resolving {address}: {err}"))?
        .next()
        .ok_or_else(|| format!("resolving {address}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|err| format!("connecting to {addr}: {err}"))?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|err| err.to_string())?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(|err| err.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUser-Agent: pulsewatch-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(|err| format!("sending to {addr}: {err}"))?;
    // Only the status line matters: "HTTP/1.1 200 OK".
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 1024 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(err) => return Err(format!("reading from {addr}: {err}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some("200")) if version.starts_with("HTTP/") => Ok(()),
        _ => Err(format!("http://{address}{path} answered {line:?}")),
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let address =
        args.next().or_else(|| std::env::var("PULSEWATCH_HEALTHCHECK_ADDRESS").ok()).unwrap_or_else(|| "127.0.0.1:9464".to_string());
    let path = args.next().unwrap_or_else(|| "/-/healthy".to_string());
    match check(&address, &path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("unhealthy: {err}");
            ExitCode::FAILURE
        }
    }
}
