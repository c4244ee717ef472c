//! CMCD (CTA-5004) from the query and the four headers: the input's lines are the query, then
//! the CMCD-Request, -Object, -Status and -Session header values.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let query = lines.next();
    let mut headers = http::HeaderMap::new();
    for name in ["cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"] {
        if let Some(v) = lines
            .next()
            .and_then(|l| http::HeaderValue::from_str(l).ok())
        {
            headers.insert(name, v);
        }
    }
    let c = media::cmcd::from_request(query, &headers);
    let _ = c.present();
});
