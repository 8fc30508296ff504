//! A loopback stand-in for the Hugging Face Hub's HTTP API, enough for the
//! `hf-hub` client the CLI uses: the repository listing
//! (`/api/models/{id}/revision/main`) and file downloads
//! (`/{id}/resolve/main/{file}`, `Range` requests answered with `206` and
//! `Content-Range`). Files over 1 MiB are answered, as on the Hub, with a
//! `302` to an absolute "CDN" URL carrying the commit and the linked etag.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct HubServer {
    pub endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl HubServer {
    /// Serves `files` (name, path on disk) as repository `repo` at commit `sha`.
    pub fn start(repo: &str, sha: &str, files: Vec<(String, PathBuf)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let site = Arc::new(Site {
            repo: repo.to_string(),
            sha: sha.to_string(),
            files,
            endpoint: endpoint.clone(),
        });
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (site, log) = (site.clone(), log.clone());
                std::thread::spawn(move || {
                    let _ = site.answer(stream, &log);
                });
            }
        });
        Self { endpoint, requests }
    }

    /// The request lines (`GET /path`) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

struct Site {
    repo: String,
    sha: String,
    files: Vec<(String, PathBuf)>,
    endpoint: String,
}

impl Site {
    fn answer(&self, stream: TcpStream, log: &Mutex<Vec<String>>) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut range = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_string());
            }
        }
        log.lock().unwrap().push(format!("GET {path}"));
        let mut out = stream;
        let listing = format!("/api/models/{}/revision/main", self.repo);
        let resolve = format!("/{}/resolve/main/", self.repo);
        if path == listing {
            let siblings: Vec<String> = self
                .files
                .iter()
                .map(|(name, _)| format!("{{\"rfilename\":\"{name}\"}}"))
                .collect();
            let body = format!(
                "{{\"id\":\"{}\",\"sha\":\"{}\",\"siblings\":[{}]}}",
                self.repo,
                self.sha,
                siblings.join(",")
            );
            return reply(&mut out, "200 OK", &[], body.as_bytes());
        }
        let (name, direct) = match (path.strip_prefix(&resolve), path.strip_prefix("/cdn/")) {
            (Some(name), _) => (name, true),
            (None, Some(name)) => (name, false),
            _ => return reply(&mut out, "404 Not Found", &[], b"no such path"),
        };
        let Some((_, file)) = self.files.iter().find(|(n, _)| n == name) else {
            return reply(&mut out, "404 Not Found", &[], b"no such file");
        };
        let data = std::fs::read(file)?;
        // A stand-in for the content hash: unique per file is all the client needs.
        let etag = format!("\"{:016x}-{}\"", data.len(), name.len());
        if direct && data.len() > 1 << 20 {
            let location = format!("{}/cdn/{name}", self.endpoint);
            let headers = [
                ("Location", location.as_str()),
                ("X-Repo-Commit", self.sha.as_str()),
                ("X-Linked-Etag", etag.as_str()),
            ];
            return reply(&mut out, "302 Found", &headers, b"");
        }
        let mut headers = vec![("X-Repo-Commit", self.sha.clone()), ("ETag", etag)];
        let (status, body) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
            Some(r) => {
                let (a, b) = r.split_once('-').unwrap_or((r, ""));
                let a: usize = a.parse().unwrap_or(0).min(data.len());
                let b: usize = b.parse().unwrap_or(data.len().saturating_sub(1));
                let b = b.min(data.len().saturating_sub(1));
                let total = data.len();
                headers.push(("Content-Range", format!("bytes {a}-{b}/{total}")));
                ("206 Partial Content", &data[a..=b.max(a)])
            }
            None => ("200 OK", &data[..]),
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        reply(&mut out, status, &headers, body)
    }
}

fn reply(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}
