//! Per-request authentication cost.
//!
//! Run with `cargo bench -p mcp-identity --bench authn`.
//!
//! - `authn_layer/jwt_repeat_token`: the whole `AuthnLayer` on an `http::Request` whose bearer
//!   JWT was seen before (JWKS cache hit + verified-token cache hit): the steady-state cost.
//! - `authn_layer/jwt_first_sight_{es256,eddsa}`: JWKS cache hit, but the signature is verified
//!   (token cache disabled): the cost of a token's first request.
//! - `authn_layer/api_key`: an API key (hash + constant-time compare).

use std::{convert::Infallible, hint::black_box, sync::Arc};

use base64::Engine as _;
use criterion::{Criterion, criterion_main};
use http::{Request, Response};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::JwkSet};
use mcp_identity::{
    Authenticator, AuthnLayer, JwksCache, JwtValidator, Mode,
    apikey::{ApiKeyStore, NewApiKey},
};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use serde_json::json;
use tower::{Layer, Service};

const AUD: &str = "https://gw.example.com/mcp";
const ISS: &str = "https://idp.example.com";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn claims() -> serde_json::Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({"iss": ISS, "aud": AUD, "sub": "alice", "exp": now + 3600, "iat": now,
           "groups": ["eng", "sre"], "scope": "mcp:tools", "email": "alice@example.com",
           "name": "Alice", "jti": "bench-1"})
}

/// (token, JWK) for ES256 and EdDSA keys made with ring.
fn tokens() -> Vec<(&'static str, String, serde_json::Value)> {
    let rng = ring::rand::SystemRandom::new();
    let ec = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec_pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec.as_ref(), &rng).unwrap();
    let p = ec_pair.public_key().as_ref();
    let ec_jwk = json!({"kty":"EC","crv":"P-256","kid":"ec1","alg":"ES256","use":"sig",
                        "x": b64(&p[1..33]), "y": b64(&p[33..65])});
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("ec1".into());
    let ec_tok =
        jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_ec_der(ec.as_ref())).unwrap();

    let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed_pair = Ed25519KeyPair::from_pkcs8(ed.as_ref()).unwrap();
    let ed_jwk = json!({"kty":"OKP","crv":"Ed25519","kid":"ed1","alg":"EdDSA","use":"sig",
                        "x": b64(ed_pair.public_key().as_ref())});
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("ed1".into());
    let ed_tok =
        jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_ed_der(ed.as_ref())).unwrap();
    vec![("es256", ec_tok, ec_jwk), ("eddsa", ed_tok, ed_jwk)]
}

type Inner = tower::util::ServiceFn<
    fn(
        Request<()>,
    )
        -> std::future::Ready<Result<Response<http_body_util::Empty<bytes::Bytes>>, Infallible>>,
>;

fn inner() -> Inner {
    fn ok(
        _: Request<()>,
    ) -> std::future::Ready<Result<Response<http_body_util::Empty<bytes::Bytes>>, Infallible>> {
        std::future::ready(Ok(Response::new(http_body_util::Empty::new())))
    }
    tower::service_fn(ok as fn(_) -> _)
}

fn layer_for(jwks: &JwkSet, cache: usize) -> AuthnLayer {
    let cache_keys = Arc::new(JwksCache::from_jwks(jwks).unwrap());
    let v = JwtValidator::new(
        cache_keys,
        ISS,
        vec![AUD.into()],
        vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
    )
    .unwrap()
    .cache_capacity(cache);
    AuthnLayer::new(
        Authenticator::new(Mode::Required)
            .jwt(v)
            .required_scopes(vec!["mcp:tools".into()]),
    )
}

fn bench(c: &mut Criterion) {
    let toks = tokens();
    let jwks: JwkSet = serde_json::from_value(
        json!({"keys": toks.iter().map(|t| t.2.clone()).collect::<Vec<_>>()}),
    )
    .unwrap();
    let mut g = c.benchmark_group("authn_layer");

    let run = |svc: &mut mcp_identity::Authn<Inner>, header: &str| {
        let req = Request::builder()
            .header("authorization", header)
            .body(())
            .unwrap();
        let res = futures::executor::block_on(svc.call(req)).unwrap();
        assert_eq!(res.status(), 200);
        black_box(res);
    };

    let mut svc = layer_for(&jwks, 10_000).layer(inner());
    let header = format!("Bearer {}", toks[0].1);
    run(&mut svc, &header);
    g.bench_function("jwt_repeat_token", |b| b.iter(|| run(&mut svc, &header)));

    for (name, tok, _) in &toks {
        let mut svc = layer_for(&jwks, 0).layer(inner());
        let header = format!("Bearer {tok}");
        g.bench_function(format!("jwt_first_sight_{name}"), |b| {
            b.iter(|| run(&mut svc, &header))
        });
    }

    let file = std::env::temp_dir().join(format!(
        "mcp-identity-bench-keys-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&file);
    let store = Arc::new(ApiKeyStore::open(&file, "gw").unwrap());
    let (key, _) = store
        .create(NewApiKey {
            agent: "bot".into(),
            scopes: vec!["mcp:tools".into()],
            ..Default::default()
        })
        .unwrap();
    let mut svc = AuthnLayer::new(
        Authenticator::new(Mode::Required)
            .api_keys(store, None)
            .required_scopes(vec!["mcp:tools".into()]),
    )
    .layer(inner());
    let header = format!("Bearer {key}");
    g.bench_function("api_key", |b| b.iter(|| run(&mut svc, &header)));
    g.finish();
    let _ = std::fs::remove_file(&file);
}

mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench);
}
use group::benches;
criterion_main!(benches);
