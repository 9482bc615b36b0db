//! What each endpoint does with a request body, transport aside: `Grape.js` `handleRequest`,
//! `onRequest` and the `handlePeer*` methods, with bittorrent-dht's `put`/`get` validation.
//!
//! [`handle`] runs the synchronous part (parse, dispatch, validate, convert) into a [`Plan`]:
//! either an immediate [`Reply`] or one typed DHT call; [`execute`] performs the call and renders
//! the answer. Both are pure apart from the DHT call, so every rule is unit-tested here.

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::announcers::FORBIDDEN;
use super::bencode::{bencode_integer, encode_value, render_js_string};
use super::dht::{DhtError, GetQuery, GotItem, GrapeDht, MutablePut, PutItem};
use super::shared::Shared;
use super::stats::{Outcome, Route};
use crate::js::{self, Encoding, JsThrow};

/// An HTTP answer, before transport headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Body bytes (`Content-Length` is their count); shared, not copied, when the same
    /// `/lookup` answer goes to many requests.
    pub body: Bytes,
    /// A `Content-Type` header: only the operator endpoints send one (`grape::status`); Node's
    /// answers have none.
    pub content_type: Option<&'static str>,
}

impl Reply {
    /// A raw-text answer (`rep.end(text)` without JSON), e.g. a 500 with a thrown message.
    pub fn raw(status: u16, text: &str) -> Self {
        Reply {
            status,
            body: Bytes::copy_from_slice(text.as_bytes()),
            content_type: None,
        }
    }

    /// An answer of an operator endpoint, with its `Content-Type`.
    pub fn typed(status: u16, content_type: &'static str, body: String) -> Self {
        Reply {
            status,
            body: body.into(),
            content_type: Some(content_type),
        }
    }

    /// A 200 whose body is already JSON text.
    fn json(text: impl Into<Bytes>) -> Self {
        Reply {
            status: 200,
            body: text.into(),
            content_type: None,
        }
    }

    /// `cb(new Error(message))`: 200 with `JSON.stringify(message)`.
    fn error_message(message: &str) -> Self {
        Reply::json(json_string(message))
    }

    /// A failed DHT call: the message as a JSON string, with the KRPC 3xx code as status.
    fn dht_error(err: &DhtError) -> Self {
        Reply {
            status: err.http_status(),
            body: json_string(&err.to_string()).into(),
            content_type: None,
        }
    }

    /// A synchronous throw inside the handler: 500 with the raw message (`Grape.js:301-309`).
    fn thrown(throw: JsThrow) -> Self {
        Reply::raw(500, &throw.0)
    }

    /// `JSON.stringify(undefined)`: 200 with an empty body.
    fn empty() -> Self {
        Reply {
            status: 200,
            body: Bytes::new(),
            content_type: None,
        }
    }
}

/// `JSON.stringify(string)`: serde_json escapes exactly what JavaScript escapes for a valid
/// string (quote, backslash, C0 controls with the same short forms, lowercase `\u00xx`).
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// The handlers a request path can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `handlePeerLookup`.
    Lookup,
    /// `handlePeerAnnounce`.
    Announce,
    /// `handlePeerUnannounce` (an extension: absent from Node grape 1.0.0).
    Unannounce,
    /// `handlePeerPut`.
    Put,
    /// `handlePeerGet`.
    Get,
}

/// Maps a request target (the raw URL, query string included) to its handler the way
/// `onRequest` does: `'handlePeer' + upperFirst(camelCase('-' + url.substr(1)))` must name a
/// method. So `/lookup`, `/Lookup`, `/_lookup`, `/-lookup`, `/lookup_` reach the lookup, while
/// `/LOOKUP`, `/lookUp`, `/lookup?x=1`, `/lookup/` and `/` do not.
pub fn endpoint_for(target: &str) -> Option<Endpoint> {
    // The paths every client sends, answered without the camelCase emulation (same result;
    // this runs for every request).
    match target {
        "/lookup" => return Some(Endpoint::Lookup),
        "/announce" => return Some(Endpoint::Announce),
        "/unannounce" => return Some(Endpoint::Unannounce),
        "/put" => return Some(Endpoint::Put),
        "/get" => return Some(Endpoint::Get),
        _ => {}
    }
    // req.url.substr(1): drop the first character, whatever it is.
    let mut chars = target.chars();
    chars.next();
    let method = format!(
        "handlePeer{}",
        upper_first(&camel_case(&format!("-{}", chars.as_str())))
    );
    match method.as_str() {
        "handlePeerLookup" => Some(Endpoint::Lookup),
        "handlePeerAnnounce" => Some(Endpoint::Announce),
        "handlePeerUnannounce" => Some(Endpoint::Unannounce),
        "handlePeerPut" => Some(Endpoint::Put),
        "handlePeerGet" => Some(Endpoint::Get),
        _ => None,
    }
}

/// JavaScript `\w` (ASCII only without the `u` flag).
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `lib/utils.js` `camelCase`: `str.replace(/(?:^\w|[A-Z]|\b\w|-\w|_\w)/g, (m, i) => i === 0 ?
/// m.toLowerCase() : m.toUpperCase()).replace(/(\s|_|-)+/g, '')`, where `i` is the match
/// offset. Alternatives are tried in order at each position, as the regex engine does.
fn camel_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut replaced = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let next = chars.get(i + 1).copied();
        let prev_is_word = i > 0 && chars.get(i - 1).is_some_and(|&p| is_word(p));
        let match_len =
            if (i == 0 && is_word(c)) || c.is_ascii_uppercase() || (is_word(c) && !prev_is_word) {
                1
            } else if (c == '-' || c == '_') && next.is_some_and(is_word) {
                2
            } else {
                0
            };
        if match_len == 0 {
            replaced.push(c);
            i += 1;
            continue;
        }
        for m in chars.iter().skip(i).take(match_len) {
            // Matches only contain ASCII characters ('-', '_' and \w).
            replaced.push(if i == 0 {
                m.to_ascii_lowercase()
            } else {
                m.to_ascii_uppercase()
            });
        }
        i += match_len;
    }
    replaced
        .chars()
        .filter(|&c| !(js::is_js_whitespace(c) || c == '_' || c == '-'))
        .collect()
}

/// `str.charAt(0).toUpperCase() + str.slice(1)`.
fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What a request needs after the synchronous part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Answer now.
    Reply(Reply),
    /// `dht.lookup(name)`.
    Lookup(Vec<u8>),
    /// `dht.announce(name, port)`; `port == 0` stands for the DHT port.
    Announce {
        /// Service name bytes.
        name: Vec<u8>,
        /// Service port, 0 = the grape's DHT port.
        port: u16,
    },
    /// `dht.unannounce(name, port)`; `port == 0` stands for the DHT port.
    Unannounce {
        /// Service name bytes.
        name: Vec<u8>,
        /// Service port, 0 = the grape's DHT port.
        port: u16,
    },
    /// `dht.put(item)`.
    Put(PutItem),
    /// `dht.get(query)`.
    Get(GetQuery),
}

/// The synchronous part of a request: `JSON.parse(body)`, `msg.data`, dispatch, validation.
/// `endpoint` is where the request target leads ([`endpoint_for`]; `None`: nowhere).
pub(crate) fn handle(endpoint: Option<Endpoint>, body: &[u8]) -> Plan {
    if endpoint == Some(Endpoint::Lookup) {
        if let Some(name) = lookup_name_fast(body) {
            return Plan::Lookup(name.as_bytes().to_vec());
        }
    }
    plan_parsed(endpoint, body)
}

/// [`handle`] through a JSON tree, for every body and endpoint.
fn plan_parsed(endpoint: Option<Endpoint>, body: &[u8]) -> Plan {
    // buf.toString(): invalid UTF-8 becomes U+FFFD, then JSON.parse.
    let text = String::from_utf8_lossy(body);
    let Ok(msg) = serde_json::from_str::<Value>(&text) else {
        return Plan::Reply(Reply::raw(500, "ERR_GRAPE_PAYLOAD_INVALID"));
    };
    // msg.data is read before dispatch: a `null` body throws even on an unknown path.
    let data = match js::prop(Some(&msg), "data") {
        Ok(data) => data,
        Err(throw) => return Plan::Reply(Reply::thrown(throw)),
    };
    let result = match endpoint {
        None => Ok(Plan::Reply(Reply::error_message("ERR_REQ_NOTFOUND"))),
        Some(Endpoint::Lookup) => Ok(plan_lookup(data)),
        Some(Endpoint::Announce) => plan_announce(data, "ERR_GRAPE_ANNOUNCE", false),
        Some(Endpoint::Unannounce) => plan_announce(data, "ERR_GRAPE_UNANNOUNCE", true),
        Some(Endpoint::Put) => plan_put(data),
        Some(Endpoint::Get) => plan_get(data),
    };
    result.unwrap_or_else(|throw| Plan::Reply(Reply::thrown(throw)))
}

/// The name of a `/lookup` body in the shape every client sends (`{"data":"name", ...}`), read
/// without building a JSON tree: the grape's most frequent request, so what the general path
/// costs (a map, a string per key and value) shows in its throughput. `None` for anything
/// else, which then takes the general path ([`handle`]) and gets exactly its answer: a body
/// that is not a JSON object (an array would deserialize into the struct), invalid UTF-8, a
/// repeated `data` (JSON.parse keeps the last one; serde refuses it), a `data` that is not a
/// non-empty string.
fn lookup_name_fast(body: &[u8]) -> Option<Cow<'_, str>> {
    #[derive(Deserialize)]
    struct LookupBody<'a> {
        #[serde(borrow)]
        data: Cow<'a, str>,
    }
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    if *first != b'{' {
        return None;
    }
    let msg = serde_json::from_slice::<LookupBody<'_>>(body).ok()?;
    (!msg.data.is_empty()).then_some(msg.data)
}

/// `handlePeerLookup`: a non-empty string.
fn plan_lookup(data: Option<&Value>) -> Plan {
    match data {
        Some(Value::String(name)) if !name.is_empty() => Plan::Lookup(name.as_bytes().to_vec()),
        _ => Plan::Reply(Reply::error_message("ERR_GRAPE_LOOKUP")),
    }
}

/// `handlePeerAnnounce` + `Grape.announce` (and the same shape for the unannounce extension).
fn plan_announce(data: Option<&Value>, not_array: &str, unannounce: bool) -> Result<Plan, JsThrow> {
    let Some(Value::Array(items)) = data else {
        return Ok(Plan::Reply(Reply::error_message(not_array)));
    };
    let (name, port) = (items.first(), items.get(1));
    if !js::is_integer(port) {
        return Ok(Plan::Reply(Reply::error_message("ERR_GRAPE_SERVICE_PORT")));
    }
    // str2hex(val) = Buffer.from(val): throws (500) for numbers, null, plain objects.
    let name = js::buffer_from(name)?;
    let port = port.and_then(js::number_value).unwrap_or(0.0);
    // `port || dht_port`: 0 (and -0) mean the grape's own DHT port. Ports outside 1..=65535 are
    // refused here (fix: Node sends them and every remote drops the announce, which surfaces as
    // "All queries failed" after the 2 s timeout, or "No nodes to query" when isolated).
    let port = if port == 0.0 {
        0
    } else if (1.0..=65535.0).contains(&port) {
        // An integer in 1..=65535.
        port as u16
    } else {
        return Ok(Plan::Reply(Reply::error_message("ERR_GRAPE_SERVICE_PORT")));
    };
    Ok(if unannounce {
        Plan::Unannounce { name, port }
    } else {
        Plan::Announce { name, port }
    })
}

/// A member of the put options after `handlePeerPut`'s conversions: either still the JSON value
/// or a `Buffer` made by `str2buf`.
enum Field<'a> {
    Raw(Option<&'a Value>),
    Buf(Vec<u8>),
}

/// `handlePeerPut` + `Grape.put` + bittorrent-dht `put` validation (`client.js:255-284`).
fn plan_put(data: Option<&Value>) -> Result<Plan, JsThrow> {
    // handlePeerPut: `opts.k` throws on undefined/null (500).
    let k_raw = js::prop(data, "k")?;
    let member = |key: &str| js::prop(data, key).ok().flatten();
    let (mut k, mut sig, mut salt) = (
        Field::Raw(k_raw),
        Field::Raw(member("sig")),
        Field::Raw(member("salt")),
    );
    if k_raw.is_some_and(js::truthy) {
        if let Some(raw) = k_raw {
            k = Field::Buf(js::str2buf(raw, Encoding::Hex)?);
        }
        if let Field::Raw(Some(raw)) = sig {
            if js::truthy(raw) {
                sig = Field::Buf(js::str2buf(raw, Encoding::Hex)?);
            }
        }
        if let Field::Raw(Some(raw)) = salt {
            if js::truthy(raw) {
                salt = Field::Buf(js::str2buf(raw, Encoding::Utf8)?);
            }
        }
    }
    // From here on errors are thrown inside Grape.put's try: 200 with the message as JSON.
    Ok(match validate_put(data, k, sig, salt) {
        Ok(item) => Plan::Put(item),
        Err(message) => Plan::Reply(Reply::error_message(&message)),
    })
}

fn validate_put(
    data: Option<&Value>,
    k: Field<'_>,
    sig: Field<'_>,
    salt: Field<'_>,
) -> Result<PutItem, String> {
    // `typeof opts === 'string'` → { v: opts } (a string has no other members).
    let v = match data {
        Some(s @ Value::String(_)) => Some(s),
        _ => js::prop(data, "v").ok().flatten(),
    };
    let member = |key: &str| js::prop(data, key).ok().flatten();
    // `if (opts.k)`: `k` became a Buffer (an object, truthy even when empty) exactly when the
    // request's `k` was truthy, and a falsy `k` stayed as it came.
    let mutable = matches!(k, Field::Buf(_));
    let Some(v) = v else {
        return Err("opts.v not given".into());
    };
    let length = js::length_of(Some(v)).map_err(|throw| throw.0)?;
    if js::to_number(length.as_ref()) >= 1000.0 {
        return Err("v must be less than 1000 bytes in put()".into());
    }
    let mut v_bencoded = Vec::new();
    encode_value(v, &mut v_bencoded);
    if !mutable {
        return Ok(PutItem {
            v_bencoded,
            mutable: None,
        });
    }
    let cas = member("cas");
    let cas = match cas {
        None => None,
        Some(c) => match js::number_value(c) {
            Some(x) => Some(bencode_integer(x)),
            None => return Err("opts.cas must be an integer if provided".into()),
        },
    };
    let k: [u8; 32] = match &k {
        Field::Buf(bytes) => bytes.as_slice().try_into().ok(),
        Field::Raw(_) => None,
    }
    .ok_or("opts.k ed25519 public key must be 32 bytes")?;
    let Field::Buf(sig) = sig else {
        return Err(
            "opts.sign function or options.sig signature is required for mutable put".into(),
        );
    };
    let salt = match salt {
        Field::Buf(bytes) if bytes.len() > 64 => return Err("opts.salt is > 64 bytes long".into()),
        Field::Buf(bytes) => bytes,
        Field::Raw(_) => Vec::new(),
    };
    let seq = match member("seq") {
        None => return Err("opts.seq not provided for a mutable update".into()),
        Some(seq) => match js::number_value(seq) {
            Some(x) => bencode_integer(x),
            None => return Err("opts.seq not an integer".into()),
        },
    };
    // Fix: Node sends a signature of any length (remotes then drop or refuse the put); a BEP 44
    // signature is 64 bytes, so anything else is refused here with a message in the same style.
    let sig: [u8; 64] = sig
        .as_slice()
        .try_into()
        .map_err(|_| "opts.sig ed25519 signature must be 64 bytes".to_owned())?;
    Ok(PutItem {
        v_bencoded,
        mutable: Some(MutablePut {
            k,
            sig,
            seq,
            salt,
            cas,
        }),
    })
}

/// `handlePeerGet` + `Grape.get` (`Grape.js:228-269`) up to the DHT call.
fn plan_get(data: Option<&Value>) -> Result<Plan, JsThrow> {
    let (hash, salt_raw, cache_raw): (Field<'_>, Option<&Value>, Option<&Value>) = match data {
        // A string is a hash: str2buf(s, 'hex') (JSON.parse first, docs/protocol.md §13.16), then {
        // hash }.
        Some(s @ Value::String(_)) => (Field::Buf(js::str2buf(s, Encoding::Hex)?), None, None),
        _ => {
            // `opts.salt` throws on undefined/null (500).
            let salt = js::prop(data, "salt")?;
            let member = |key: &str| js::prop(data, key).ok().flatten();
            (Field::Raw(member("hash")), salt, member("cache"))
        }
    };
    let salt = match salt_raw {
        Some(raw) if js::truthy(raw) => Some(js::str2buf(raw, Encoding::Utf8)?),
        _ => None,
    };
    // node.get → toBuffer(hash): a string is hex-decoded (no JSON.parse here); anything else
    // throws 'Pass a buffer or a string', which Grape.get turns into ERR_GRAPE_GENERIC.
    let key = match hash {
        Field::Buf(bytes) => bytes,
        Field::Raw(Some(Value::String(s))) => js::hex_decode_lenient(s),
        Field::Raw(_) => return Ok(Plan::Reply(Reply::error_message("ERR_GRAPE_GENERIC"))),
    };
    // Fix: a target that is not 20 bytes can never be stored anywhere (keys are SHA-1); Node
    // runs a whole traversal before answering "not found", we answer at once.
    let Ok(hash) = <[u8; 20]>::try_from(key.as_slice()) else {
        return Ok(Plan::Reply(Reply::empty()));
    };
    let cache = !matches!(cache_raw, Some(Value::Bool(false)));
    Ok(Plan::Get(GetQuery { hash, salt, cache }))
}

/// Runs the DHT call of a plan for the HTTP client at `client` and renders the answer.
///
/// Counts the request in the shared [`ApiStats`](super::stats::ApiStats): its route and
/// whether the DHT call succeeded; a [`Plan::Reply`] is counted by the caller, which knows the
/// path. Counting is a relaxed atomic add (and, for a lookup, a clock read).
pub(crate) async fn execute<D: GrapeDht>(shared: &Shared<D>, client: IpAddr, plan: Plan) -> Reply {
    let (dht, lookups, stats) = (shared.dht.as_ref(), &shared.lookups, &shared.stats);
    let (route, result) = match plan {
        Plan::Reply(reply) => return reply,
        Plan::Lookup(name) => {
            let started = std::time::Instant::now();
            let reply = Reply::json(lookups.lookup(dht, name).await.json.clone());
            stats.lookup_took(started.elapsed());
            (Route::Lookup, Ok(reply))
        }
        Plan::Announce { name, port } => {
            let port = if port == 0 { dht.dht_port() } else { port };
            // Before the DHT call: a client that leaves before the answer still owns it.
            shared.announcers.announced(&name, port, client);
            let result = dht.announce(name.clone(), port).await;
            // After the store changed, so that no lookup reuses the answer from before.
            lookups.forget(&name);
            (Route::Announce, count_reply(result))
        }
        Plan::Unannounce { name, port } => {
            let port = if port == 0 { dht.dht_port() } else { port };
            if !shared.announcers.may_unannounce(&name, port, client) {
                stats.request(Route::Unannounce, Outcome::Invalid);
                return Reply::error_message(FORBIDDEN);
            }
            let result = dht.unannounce(name.clone(), port).await;
            if result.is_ok() {
                shared.announcers.unannounced(&name, port);
            }
            lookups.forget(&name);
            (Route::Unannounce, count_reply(result))
        }
        Plan::Put(item) => (
            Route::Put,
            match dht.put(item).await {
                Ok(key) => Ok(Reply::json(json_string(&hex::encode(key)))),
                Err(err) => Err(Reply::dht_error(&err)),
            },
        ),
        Plan::Get(query) => {
            let salt = query.salt.clone();
            (
                Route::Get,
                match dht.get(query).await {
                    Ok(Some(item)) => Ok(Reply::json(render_got(&item, salt.as_deref()))),
                    Ok(None) => Ok(Reply::empty()),
                    Err(err) => Err(Reply::dht_error(&err)),
                },
            )
        }
    };
    match result {
        Ok(reply) => {
            stats.request(route, Outcome::Ok);
            reply
        }
        Err(reply) => {
            stats.request(route, Outcome::Failed);
            reply
        }
    }
}

fn count_reply(result: Result<usize, DhtError>) -> Result<Reply, Reply> {
    match result {
        Ok(count) => Ok(Reply::json(count.to_string())),
        Err(err) => Err(Reply::dht_error(&err)),
    }
}

/// The JSON object `Grape.get` sends for a found item (docs/protocol.md §3.9): binary fields in
/// hex, `v` as `v.toString()`. A local hit has `createGetResponse`'s key order `id, token(null),
/// v[, sig, k, seq]`; a remote hit the order of the bencoded answer `id[, k, seq, sig], token, v`,
/// then the request's salt (bittorrent-dht re-attaches it to every answer).
pub(crate) fn render_got(item: &GotItem, query_salt: Option<&[u8]>) -> String {
    let v = render_js_string(&item.v_bencoded)
        .unwrap_or_else(|| String::from_utf8_lossy(&item.v_bencoded).into_owned());
    let seq = |seq: i64| js::number_to_string(seq as f64);
    let mut fields: Vec<(&str, String)> = Vec::with_capacity(7);
    fields.push(("id", json_string(&hex::encode(item.id))));
    if item.from_local {
        fields.push(("token", "null".to_owned()));
        fields.push(("v", json_string(&v)));
        if let Some(sig) = &item.sig {
            fields.push(("sig", json_string(&hex::encode(sig))));
            if let Some(k) = &item.k {
                fields.push(("k", json_string(&hex::encode(k))));
            }
            if let Some(s) = item.seq {
                fields.push(("seq", seq(s)));
            }
        }
    } else {
        if let Some(k) = &item.k {
            fields.push(("k", json_string(&hex::encode(k))));
        }
        if let Some(s) = item.seq {
            fields.push(("seq", seq(s)));
        }
        if let Some(sig) = &item.sig {
            fields.push(("sig", json_string(&hex::encode(sig))));
        }
        if let Some(token) = &item.token {
            fields.push(("token", json_string(&hex::encode(token))));
        }
        fields.push(("v", json_string(&v)));
        if let Some(salt) = query_salt {
            fields.push(("salt", json_string(&String::from_utf8_lossy(salt))));
        }
    }
    let body: Vec<String> = fields
        .into_iter()
        .map(|(key, value)| format!("\"{key}\":{value}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(target: &str, body: &str) -> Plan {
        handle(endpoint_for(target), body.as_bytes())
    }

    fn reply(status: u16, body: &str) -> Plan {
        Plan::Reply(Reply::raw(status, body))
    }

    #[test]
    fn dispatch_follows_camel_case() {
        for ok in [
            "/lookup",
            "/Lookup",
            "/-lookup",
            "/_lookup",
            "/__lookup",
            "/lookup-",
            "/lookup_",
            "/--lookup",
        ] {
            assert_eq!(endpoint_for(ok), Some(Endpoint::Lookup), "{ok}");
        }
        for bad in [
            "/LOOKUP",
            "/lookUp",
            "/look_up",
            "/lookup?x=1",
            "/lookup/",
            "/",
            "",
            "/foo",
            "/look-up",
            "*",
            "/lookup%20",
        ] {
            assert_eq!(endpoint_for(bad), None, "{bad}");
        }
        assert_eq!(endpoint_for("/announce"), Some(Endpoint::Announce));
        assert_eq!(endpoint_for("/_Announce_"), Some(Endpoint::Announce));
        assert_eq!(endpoint_for("/put"), Some(Endpoint::Put));
        assert_eq!(endpoint_for("/Get"), Some(Endpoint::Get));
        assert_eq!(endpoint_for("/unannounce"), Some(Endpoint::Unannounce));
        // The first character is dropped whatever it is.
        assert_eq!(endpoint_for("xget"), Some(Endpoint::Get));
    }

    #[test]
    fn camel_case_matches_utils_js() {
        assert_eq!(camel_case("-lookup"), "lookup");
        assert_eq!(camel_case("-LOOKUP"), "lOOKUP");
        assert_eq!(camel_case("-look_up"), "lookUp");
        assert_eq!(camel_case("-_lookup"), "lookup");
        assert_eq!(camel_case("-__lookup"), "Lookup");
        assert_eq!(camel_case("-lookup?x=1"), "lookup?X=1");
        assert_eq!(camel_case("-foo bar"), "fooBar");
        assert_eq!(upper_first("lookup"), "Lookup");
        assert_eq!(upper_first(""), "");
    }

    #[test]
    fn envelope_errors() {
        assert_eq!(
            plan("/lookup", "garbage"),
            reply(500, "ERR_GRAPE_PAYLOAD_INVALID")
        );
        assert_eq!(plan("/lookup", ""), reply(500, "ERR_GRAPE_PAYLOAD_INVALID"));
        assert_eq!(
            plan("/lookup", "null"),
            reply(500, "Cannot read properties of null (reading 'data')")
        );
        // data is read before dispatch.
        assert_eq!(
            plan("/nope", "null"),
            reply(500, "Cannot read properties of null (reading 'data')")
        );
        assert_eq!(
            plan("/foo", r#"{"data":"x"}"#),
            reply(200, r#""ERR_REQ_NOTFOUND""#)
        );
        // A non-object body has no data: lookup of undefined.
        assert_eq!(plan("/lookup", "5"), reply(200, r#""ERR_GRAPE_LOOKUP""#));
        // Invalid UTF-8 is replaced, not refused.
        assert_eq!(
            handle(Some(Endpoint::Lookup), b"{\"data\":\"a\xffb\"}"),
            Plan::Lookup("a\u{fffd}b".as_bytes().to_vec())
        );
    }

    #[test]
    fn canonical_paths_take_the_fast_way_to_the_same_endpoint() {
        for (path, endpoint) in [
            ("/lookup", Endpoint::Lookup),
            ("/announce", Endpoint::Announce),
            ("/unannounce", Endpoint::Unannounce),
            ("/put", Endpoint::Put),
            ("/get", Endpoint::Get),
        ] {
            assert_eq!(endpoint_for(path), Some(endpoint));
            // The general rule (what the fast path skips) agrees.
            let method = format!(
                "handlePeer{}",
                upper_first(&camel_case(&format!("-{}", &path[1..])))
            );
            assert_eq!(method, format!("handlePeer{endpoint:?}"));
        }
    }

    #[test]
    fn lookup_rules() {
        assert_eq!(
            plan("/lookup", r#"{"data":"rest:util:net","rid":"abc"}"#),
            Plan::Lookup(b"rest:util:net".to_vec())
        );
        for body in [
            r#"{}"#,
            r#"{"data":5}"#,
            r#"{"data":""}"#,
            r#"{"data":["x"]}"#,
            r#"{"data":null}"#,
        ] {
            assert_eq!(
                plan("/lookup", body),
                reply(200, r#""ERR_GRAPE_LOOKUP""#),
                "{body}"
            );
        }
    }

    #[test]
    fn the_lookup_fast_path_answers_as_the_json_tree_does() {
        let bodies: [&[u8]; 18] = [
            br#"{"data":"svc","rid":"abc"}"#,
            br#" 	{"rid":1,"data":"svc"} "#,
            br#"{"data":"s\u0076c\n"}"#,
            br#"{"d\u0061ta":"svc"}"#,
            // JSON.parse keeps the last of repeated keys.
            br#"{"data":"a","data":"b"}"#,
            br#"{"data":5,"data":"b"}"#,
            br#"{"data":"a","data":5}"#,
            // An array is not an object: msg.data is undefined.
            br#"["svc"]"#,
            br#"{"data":""}"#,
            br#"{"data":null}"#,
            br#"{"data":["svc"]}"#,
            br#"{}"#,
            b"{\"data\":\"a\xffb\"}",
            br#"{"data":"svc"} x"#,
            br#"{"data":"svc""#,
            br#"null"#,
            b"",
            br#"{"data":"\ud800"}"#,
        ];
        for body in bodies {
            assert_eq!(
                handle(Some(Endpoint::Lookup), body),
                plan_parsed(Some(Endpoint::Lookup), body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            lookup_name_fast(br#"{"data":"a","data":"b"}"#),
            None,
            "repeated keys take the general path"
        );
        assert_eq!(
            lookup_name_fast(br#"{"rid":"x","data":"svc"}"#).as_deref(),
            Some("svc")
        );
    }

    #[test]
    fn announce_rules() {
        assert_eq!(
            plan(
                "/announce",
                r#"{"data":["rest:util:net",1337],"rid":"abc"}"#
            ),
            Plan::Announce {
                name: b"rest:util:net".to_vec(),
                port: 1337
            }
        );
        assert_eq!(
            plan("/announce", r#"{"data":["svc",0]}"#),
            Plan::Announce {
                name: b"svc".to_vec(),
                port: 0
            }
        );
        assert_eq!(
            plan("/announce", r#"{"data":["svc",-0]}"#),
            Plan::Announce {
                name: b"svc".to_vec(),
                port: 0
            }
        );
        assert_eq!(
            plan("/announce", r#"{"data":["svc",1337.0]}"#),
            Plan::Announce {
                name: b"svc".to_vec(),
                port: 1337
            }
        );
        assert_eq!(
            plan("/announce", r#"{"data":[[104,105],1]}"#),
            Plan::Announce {
                name: b"hi".to_vec(),
                port: 1
            }
        );
        assert_eq!(
            plan("/announce", r#"{"data":["",1]}"#),
            Plan::Announce {
                name: vec![],
                port: 1
            }
        );
        for body in [
            r#"{"data":"x"}"#,
            r#"{}"#,
            r#"{"data":{"0":"a","1":1}}"#,
            r#"{"data":null}"#,
        ] {
            assert_eq!(
                plan("/announce", body),
                reply(200, r#""ERR_GRAPE_ANNOUNCE""#),
                "{body}"
            );
        }
        for body in [
            r#"{"data":[]}"#,
            r#"{"data":["svc","1337"]}"#,
            r#"{"data":["svc",1337.5]}"#,
            r#"{"data":["svc"]}"#,
            r#"{"data":["svc",70000]}"#,
            r#"{"data":["svc",-5]}"#,
        ] {
            assert_eq!(
                plan("/announce", body),
                reply(200, r#""ERR_GRAPE_SERVICE_PORT""#),
                "{body}"
            );
        }
        assert_eq!(
            plan("/announce", r#"{"data":[5,1337]}"#),
            reply(500, "The first argument must be of type string or an instance of Buffer, ArrayBuffer, or Array or an Array-like Object. Received type number (5)")
        );
        assert_eq!(
            plan("/announce", r#"{"data":[null,1337]}"#),
            reply(500, "The first argument must be of type string or an instance of Buffer, ArrayBuffer, or Array or an Array-like Object. Received null")
        );
        assert_eq!(
            plan("/unannounce", r#"{"data":"x"}"#),
            reply(200, r#""ERR_GRAPE_UNANNOUNCE""#)
        );
        assert_eq!(
            plan("/unannounce", r#"{"data":["svc",1]}"#),
            Plan::Unannounce {
                name: b"svc".to_vec(),
                port: 1
            }
        );
    }

    fn put_item(plan: Plan) -> PutItem {
        match plan {
            Plan::Put(item) => item,
            other => panic!("expected a put, got {other:?}"),
        }
    }

    #[test]
    fn immutable_put() {
        let item = put_item(plan("/put", r#"{"data":{"v":"hello world"},"rid":"x"}"#));
        assert_eq!(
            item,
            PutItem {
                v_bencoded: b"11:hello world".to_vec(),
                mutable: None
            }
        );
        // A plain string is { v: string }.
        assert_eq!(
            put_item(plan("/put", r#"{"data":"str"}"#)).v_bencoded,
            b"3:str"
        );
        assert_eq!(
            put_item(plan("/put", r#"{"data":{"v":5}}"#)).v_bencoded,
            b"i5e"
        );
        assert_eq!(
            put_item(plan("/put", r#"{"data":{"v":{"a":1}}}"#)).v_bencoded,
            b"d1:ai1ee"
        );
        // Immutable puts ignore seq/sig/salt.
        assert_eq!(
            put_item(plan("/put", r#"{"data":{"v":"x","seq":"no","k":""}}"#)).mutable,
            None
        );
        // 999 UTF-16 units pass, 1000 do not; the check counts UTF-16 units, not bytes.
        let ok = format!(r#"{{"data":{{"v":"{}"}}}}"#, "é".repeat(999));
        assert_eq!(put_item(plan("/put", &ok)).v_bencoded.len(), 1998 + 5);
        let long = format!(r#"{{"data":{{"v":"{}"}}}}"#, "a".repeat(1000));
        assert_eq!(
            plan("/put", &long),
            reply(200, r#""v must be less than 1000 bytes in put()""#)
        );
        let many = format!(r#"{{"data":{{"v":[{}1]}}}}"#, "1,".repeat(999));
        assert_eq!(
            plan("/put", &many),
            reply(200, r#""v must be less than 1000 bytes in put()""#)
        );
        assert_eq!(
            plan("/put", r#"{"data":{"v":{"length":"2000"}}}"#),
            reply(200, r#""v must be less than 1000 bytes in put()""#)
        );
    }

    #[test]
    fn put_validation_strings() {
        let k = "a".repeat(64);
        let sig = "b".repeat(128);
        for (body, want) in [
            (r#"{"data":{}}"#.to_owned(), r#""opts.v not given""#),
            (r#"{"data":5}"#.to_owned(), r#""opts.v not given""#),
            (r#"{"data":["x"]}"#.to_owned(), r#""opts.v not given""#),
            (
                r#"{"data":{"v":null}}"#.to_owned(),
                r#""Cannot read properties of null (reading 'length')""#,
            ),
            (
                format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"{sig}","seq":1,"cas":"1"}}}}"#),
                r#""opts.cas must be an integer if provided""#,
            ),
            (
                format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"{sig}","seq":1,"cas":null}}}}"#),
                r#""opts.cas must be an integer if provided""#,
            ),
            (
                r#"{"data":{"v":"x","k":"abcd","sig":"00","seq":1}}"#.to_owned(),
                r#""opts.k ed25519 public key must be 32 bytes""#,
            ),
            (
                r#"{"data":{"v":"x","k":"zz","seq":1}}"#.to_owned(),
                r#""opts.k ed25519 public key must be 32 bytes""#,
            ),
            (
                format!(r#"{{"data":{{"v":"x","k":"{k}","seq":1}}}}"#),
                r#""opts.sign function or options.sig signature is required for mutable put""#,
            ),
            (
                format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"","seq":1}}}}"#),
                r#""opts.sign function or options.sig signature is required for mutable put""#,
            ),
            (
                format!(
                    r#"{{"data":{{"v":"x","k":"{k}","sig":"{sig}","seq":1,"salt":"{}"}}}}"#,
                    "s".repeat(65)
                ),
                r#""opts.salt is > 64 bytes long""#,
            ),
            (
                format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"{sig}"}}}}"#),
                r#""opts.seq not provided for a mutable update""#,
            ),
            (
                format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"{sig}","seq":"1"}}}}"#),
                r#""opts.seq not an integer""#,
            ),
            (
                format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"00","seq":1}}}}"#),
                r#""opts.sig ed25519 signature must be 64 bytes""#,
            ),
        ] {
            assert_eq!(plan("/put", &body), reply(200, want), "{body}");
        }
        assert_eq!(
            plan("/put", r#"{}"#),
            reply(500, "Cannot read properties of undefined (reading 'k')")
        );
        assert_eq!(
            plan("/put", r#"{"data":null}"#),
            reply(500, "Cannot read properties of null (reading 'k')")
        );
        // str2buf of a number k throws twice: 500.
        assert_eq!(
            plan("/put", r#"{"data":{"v":"x","k":5}}"#),
            reply(500, "The first argument must be of type string or an instance of Buffer, ArrayBuffer, or Array or an Array-like Object. Received type number (5)")
        );
    }

    #[test]
    fn mutable_put_conversions() {
        let k = "a".repeat(64);
        let sig = "b".repeat(128);
        let body = format!(
            r#"{{"data":{{"v":"hello mutable","k":"{k}","sig":"{sig}","seq":1.9,"salt":"mysalt","cas":-2.5}}}}"#
        );
        let item = put_item(plan("/put", &body));
        assert_eq!(item.v_bencoded, b"13:hello mutable");
        assert_eq!(
            item.mutable,
            Some(MutablePut {
                k: [0xaa; 32],
                sig: [0xbb; 64],
                seq: 1,
                salt: b"mysalt".to_vec(),
                cas: Some(-2)
            })
        );
        // docs/protocol.md §13.16: salt goes through JSON.parse first.
        let body =
            format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"{sig}","seq":0,"salt":"[1,2]"}}}}"#);
        assert_eq!(
            put_item(plan("/put", &body)).mutable.map(|m| m.salt),
            Some(vec![1, 2])
        );
        // A Buffer serialised by JSON.stringify is accepted for k.
        let data: Vec<u8> = (0..32).collect();
        let body = json!({"data": {"v": "x", "k": {"type": "Buffer", "data": data}, "sig": sig, "seq": 3}}).to_string();
        assert_eq!(
            put_item(plan("/put", &body)).mutable.map(|m| m.k.to_vec()),
            Some(data)
        );
        // A falsy salt means no salt.
        let body = format!(r#"{{"data":{{"v":"x","k":"{k}","sig":"{sig}","seq":0,"salt":""}}}}"#);
        assert_eq!(
            put_item(plan("/put", &body)).mutable.map(|m| m.salt),
            Some(vec![])
        );
    }

    #[test]
    fn get_rules() {
        let hash = "6d33adc2b6b2c14c3036feefb7fedbca1a880527";
        let want = GetQuery {
            hash: [
                0x6d, 0x33, 0xad, 0xc2, 0xb6, 0xb2, 0xc1, 0x4c, 0x30, 0x36, 0xfe, 0xef, 0xb7, 0xfe,
                0xdb, 0xca, 0x1a, 0x88, 0x05, 0x27,
            ],
            salt: None,
            cache: true,
        };
        assert_eq!(
            plan("/get", &format!(r#"{{"data":"{hash}","rid":"x"}}"#)),
            Plan::Get(want.clone())
        );
        assert_eq!(
            plan(
                "/get",
                &format!(r#"{{"data":{{"hash":"{hash}","cache":false}}}}"#)
            ),
            Plan::Get(GetQuery {
                cache: false,
                ..want.clone()
            })
        );
        assert_eq!(
            plan(
                "/get",
                &format!(r#"{{"data":{{"hash":"{hash}","cache":0,"salt":"mysalt"}}}}"#)
            ),
            Plan::Get(GetQuery {
                salt: Some(b"mysalt".to_vec()),
                ..want
            })
        );
        for body in [
            r#"{"data":{}}"#,
            r#"{"data":5}"#,
            r#"{"data":true}"#,
            r#"{"data":[]}"#,
            r#"{"data":{"hash":5}}"#,
        ] {
            assert_eq!(
                plan("/get", body),
                reply(200, r#""ERR_GRAPE_GENERIC""#),
                "{body}"
            );
        }
        assert_eq!(
            plan("/get", r#"{}"#),
            reply(500, "Cannot read properties of undefined (reading 'salt')")
        );
        assert_eq!(
            plan("/get", r#"{"data":null}"#),
            reply(500, "Cannot read properties of null (reading 'salt')")
        );
        assert_eq!(
            plan("/get", r#"{"data":{"hash":"00","salt":5}}"#),
            reply(500, "The first argument must be of type string or an instance of Buffer, ArrayBuffer, or Array or an Array-like Object. Received type number (5)")
        );
        // Invalid hex and short hashes are "not found" (empty 200) without a traversal.
        assert_eq!(
            plan("/get", r#"{"data":"zz"}"#),
            Plan::Reply(Reply::empty())
        );
        assert_eq!(plan("/get", r#"{"data":""}"#), Plan::Reply(Reply::empty()));
    }

    #[test]
    fn got_items_render_in_node_key_order() {
        let local = GotItem {
            id: [0x16; 20],
            token: None,
            v_bencoded: b"11:hello world".to_vec(),
            k: None,
            sig: None,
            seq: None,
            from_local: true,
        };
        let id = "16".repeat(20);
        assert_eq!(
            render_got(&local, None),
            format!(r#"{{"id":"{id}","token":null,"v":"hello world"}}"#)
        );
        let remote = GotItem {
            token: Some(vec![0x31; 20]),
            from_local: false,
            ..local.clone()
        };
        let token = "31".repeat(20);
        assert_eq!(
            render_got(&remote, None),
            format!(r#"{{"id":"{id}","token":"{token}","v":"hello world"}}"#)
        );
        let mutable = GotItem {
            v_bencoded: b"13:hello mutable".to_vec(),
            k: Some([0xaa; 32]),
            sig: Some([0xbb; 64]),
            seq: Some(1),
            ..remote.clone()
        };
        let (k, sig) = ("aa".repeat(32), "bb".repeat(64));
        assert_eq!(
            render_got(&mutable, Some(b"mysalt")),
            format!(
                r#"{{"id":"{id}","k":"{k}","seq":1,"sig":"{sig}","token":"{token}","v":"hello mutable","salt":"mysalt"}}"#
            )
        );
        let local_mutable = GotItem {
            from_local: true,
            token: None,
            ..mutable
        };
        assert_eq!(
            render_got(&local_mutable, Some(b"ignored")),
            format!(
                r#"{{"id":"{id}","token":null,"v":"hello mutable","sig":"{sig}","k":"{k}","seq":1}}"#
            )
        );
        let number = GotItem {
            v_bencoded: b"i5e".to_vec(),
            ..local
        };
        assert!(render_got(&number, None).ends_with(r#""v":"5"}"#));
    }
}
