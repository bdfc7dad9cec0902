use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_service::Service;

use super::{
    Authenticator, AuthnLayer,
    body::AuthnBody,
    future::{ResponseFuture, metadata_response, reject_response},
};

/// The service built by [`AuthnLayer`].
#[derive(Debug, Clone)]
pub struct Authn<S> {
    pub(super) inner: S,
    pub(super) auth: Arc<Authenticator>,
}

impl<S> Authn<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, auth: Arc<Authenticator>) -> Self {
        Self { inner, auth }
    }

    /// A layer producing this service.
    pub fn layer(auth: Authenticator) -> AuthnLayer {
        AuthnLayer::new(auth)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Authn<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    ReqBody: Send + 'static,
{
    type Response = Response<AuthnBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        if let Some(m) = self.auth.metadata_for(req.method(), req.uri().path()) {
            return ResponseFuture::respond(metadata_response(m));
        }
        match self.auth.authenticate_sync(req.headers()) {
            Ok(outcome) => match self.auth.apply(outcome, req.extensions_mut()) {
                Ok(()) => ResponseFuture::inner(self.inner.call(req)),
                Err(rejection) => ResponseFuture::respond(reject_response(&rejection)),
            },
            Err(token) => {
                // The key must be fetched: move the ready service into the future.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let auth = Arc::clone(&self.auth);
                let verify = Box::pin(async move {
                    let outcome = auth.authenticate_jwt(token).await;
                    (auth, outcome)
                });
                ResponseFuture::verifying(verify, req, inner)
            }
        }
    }
}
