//! The HTTP publish hook (`publish_hook = URL`): `POST` JSON before a publish with a key that
//! no `[[streams]]` entry knows is accepted, and after a publisher it let in goes away.
//!
//! Publish: `{"action":"publish","app":"live","key":"…","protocol":"rtmp|rtmps|srt",
//! "peer":"IP:PORT","session":"…"}`. Allowed only on a 2xx whose JSON body names the public
//! stream, `{"name":"NAME"}`; any other status, a 2xx without a valid name, a timeout or an
//! unreachable hook refuses (fail closed) and the reason is logged — never the key.
//! Unpublish: `{"action":"unpublish","name":"NAME","protocol":…,"peer":…,"session":…}`, fire
//! and forget.

use ingest::admission::{Admission, Hook, HookFuture, Unpublished};
use media::StreamName;

/// Answers bigger than this are not a stream name.
const MAX_ANSWER: usize = 16 * 1024;

pub struct HttpHook {
    url: String,
    client: reqwest::Client,
    timeout: std::time::Duration,
}

impl HttpHook {
    /// `timeout` bounds each request (the gate bounds the whole question too).
    pub fn new(url: &str, timeout: std::time::Duration) -> anyhow::Result<HttpHook> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(HttpHook {
            url: url.to_owned(),
            client,
            timeout,
        })
    }
}

/// Why the hook's answer does not allow the publish, or the stream it names.
fn judge(status: u16, body: &[u8]) -> Result<StreamName, String> {
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}"));
    }
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| format!("HTTP {status} without a JSON body naming the stream"))?;
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| format!("HTTP {status} without \"name\""))?;
    StreamName::new(name).ok_or_else(|| {
        format!("HTTP {status} naming an invalid stream (want [A-Za-z0-9_-]{{1,64}})")
    })
}

impl Hook for HttpHook {
    fn authorize(&self, a: Admission) -> HookFuture {
        let request = self.client.post(&self.url).json(&serde_json::json!({
            "action": "publish",
            "app": a.app,
            "key": a.key,
            "protocol": a.protocol.as_str(),
            "peer": a.peer.to_string(),
            "session": a.session.to_string(),
        }));
        let timeout = self.timeout;
        let failed = move |e: reqwest::Error| {
            if e.is_timeout() {
                format!("the publish hook did not answer within {timeout:?}")
            } else {
                // Without the URL (it may hold credentials); the key is only in the body.
                format!("the publish hook is unreachable: {}", e.without_url())
            }
        };
        Box::pin(async move {
            let resp = request.send().await.map_err(failed)?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(failed)?;
            if body.len() > MAX_ANSWER {
                return Err(format!("HTTP {status} with a {} byte answer", body.len()));
            }
            judge(status, &body)
        })
    }

    fn unpublished(&self, u: Unpublished) {
        let request = self.client.post(&self.url).json(&serde_json::json!({
            "action": "unpublish",
            "name": u.name.as_str(),
            "protocol": u.protocol.as_str(),
            "peer": u.peer.to_string(),
            "session": u.session.to_string(),
        }));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if let Err(e) = request.send().await {
                tracing::warn!(error = %e.without_url(), "unpublish notification failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_2xx_naming_a_valid_stream_allows() {
        assert_eq!(judge(200, br#"{"name":"cam"}"#).unwrap().as_str(), "cam");
        assert_eq!(
            judge(204, br#"{"name":"cam-2"}"#).unwrap().as_str(),
            "cam-2"
        );
        assert_eq!(judge(403, br#"{"name":"cam"}"#).unwrap_err(), "HTTP 403");
        assert!(judge(200, b"").unwrap_err().contains("without a JSON body"));
        assert!(judge(200, b"{}").unwrap_err().contains("without \"name\""));
        assert!(judge(200, br#"{"name":7}"#)
            .unwrap_err()
            .contains("without \"name\""));
        assert!(judge(200, br#"{"name":"../x"}"#)
            .unwrap_err()
            .contains("invalid"));
        assert!(judge(302, b"").is_err());
    }
}
