//! Attachments in an S3-compatible store: `s3s-fs` (from crates.io), started
//! here on its own port and directory. The node presigns every URL; the
//! store checks the signatures and their expiry.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::attachments::the_whole_road;
use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(attachments_go_to_an_s3_compatible_store);

const ACCESS_KEY: &str = "AKOCHATTEST";
const SECRET_KEY: &str = "SKOCHATTEST0123456789";

/// An `s3s-fs` of the test's own, with one bucket; stopped when dropped.
struct S3Server {
    child: Child,
    port: u16,
    _root: tempfile::TempDir,
}

impl S3Server {
    async fn start(bucket: &str) -> Self {
        let found = Command::new("sh")
            .args(["-c", "command -v s3s-fs"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "s3s-fs must be installed (scripts/test installs it)");
        let root = tempfile::tempdir().unwrap();
        // A bucket is a directory of the root.
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("s3s-fs")
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let ready = crate::helpers::eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        assert!(ready, "s3s-fs listens");
        Self {
            child,
            port,
            _root: root,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn attachments_go_to_an_s3_compatible_store(backend: Backend) {
    let s3 = S3Server::start("ochat-files").await;
    let endpoint = format!("http://127.0.0.1:{}", s3.port);
    let app = TestApp::spawn_with(
        backend,
        &[
            ("S3_ENDPOINT", &endpoint),
            ("S3_BUCKET", "ochat-files"),
            ("S3_ACCESS_KEY_ID", ACCESS_KEY),
            ("S3_SECRET_ACCESS_KEY", SECRET_KEY),
            ("ATTACHMENT_URL_TTL", "3s"),
        ],
    )
    .await;
    the_whole_road(&app, Duration::from_millis(4200)).await;
}
