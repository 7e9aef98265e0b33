//! The OpenAI client over https: a local TLS server with a self-signed certificate made in the
//! test is refused by default and trusted once `SSL_CERT_FILE` names the certificate.
//! (One test in this file: it sets `SSL_CERT_FILE` for the process.)
#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::thread;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use trajdb_agent::openai::{ChatMessage, LlmError, OpenAiClient};

/// Reads one request (head and Content-Length body) from a TLS stream; returns its head.
fn read_request(s: &mut impl Read) -> Option<String> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..i]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while data.len() < i + 4 + len {
                let n = s.read(&mut buf).ok()?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
            }
            return Some(head);
        }
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// Serves `connections` TLS connections with `cert`; sends each request line it answered.
fn serve_tls(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    connections: usize,
) -> (u16, mpsc::Receiver<String>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // A client that rejects the certificate ends the handshake: nothing to answer.
            let Some(head) = read_request(&mut tls) else {
                continue;
            };
            let body = r#"{"choices":[{"message":{"role":"assistant","content":"over tls"}}]}"#;
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            tls.conn.send_close_notify();
            let _ = tls.flush();
            let _ = tx.send(head.lines().next().unwrap_or("").to_string());
        }
    });
    (port, rx)
}

#[test]
fn https_server_with_self_signed_cert_is_trusted_through_ssl_cert_file() {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let dir = std::env::temp_dir().join(format!("trajdb-https-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pem = dir.join("ca.pem");
    std::fs::write(&pem, made.cert.pem()).unwrap();
    let cert = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.key_pair.serialize_der()));
    let (port, rx) = serve_tls(cert, key, 2);
    let base = format!("https://127.0.0.1:{port}/v1");
    let hi = [ChatMessage::user("hi")];

    // Without the certificate file: the webpki roots do not know this issuer.
    let untrusted = OpenAiClient::with_cert_file(&base, Some("sk-x"), "m", None)
        .unwrap()
        .with_retries(0)
        .chat(&hi)
        .err();
    match &untrusted {
        Some(LlmError::Connect { message, .. }) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }

    // With SSL_CERT_FILE naming it, as a user would set it.
    std::env::set_var("SSL_CERT_FILE", &pem);
    let client = OpenAiClient::new(&base, Some("sk-x"), "m")
        .unwrap()
        .with_retries(0);
    assert_eq!(client.chat(&hi), Ok("over tls".to_string()));
    assert_eq!(
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(),
        "post /v1/chat/completions http/1.1"
    );
    std::env::remove_var("SSL_CERT_FILE");
    let _ = std::fs::remove_dir_all(&dir);
}
