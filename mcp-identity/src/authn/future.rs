use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{Authenticator, Outcome, Rejection, body::AuthnBody};
use crate::metadata::ProtectedResourceMetadata;

type Verifying = Pin<Box<dyn Future<Output = (Arc<Authenticator>, Outcome)> + Send>>;

pin_project! {
    /// The response future of [`Authn`](super::Authn).
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<B>>, B> {
        Inner { #[pin] fut: S::Future },
        Respond { response: Option<Response<Bytes>> },
        Verifying { verify: Verifying, req: Option<Request<B>>, inner: S },
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(super) fn inner(fut: S::Future) -> Self {
        Self {
            state: State::Inner { fut },
        }
    }

    pub(super) fn respond(response: Response<Bytes>) -> Self {
        Self {
            state: State::Respond {
                response: Some(response),
            },
        }
    }

    pub(super) fn verifying(verify: Verifying, req: Request<B>, inner: S) -> Self {
        Self {
            state: State::Verifying {
                verify,
                req: Some(req),
                inner,
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<AuthnBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { fut } => {
                    let resp = ready!(fut.poll(cx))?;
                    return Poll::Ready(Ok(resp.map(AuthnBody::inner)));
                }
                StateProj::Respond { response } => {
                    let resp = response.take().unwrap_or_default();
                    return Poll::Ready(Ok(resp.map(AuthnBody::full)));
                }
                StateProj::Verifying { verify, req, inner } => {
                    let (auth, outcome) = ready!(verify.as_mut().poll(cx));
                    let Some(mut req) = req.take() else {
                        this.state.set(State::Respond { response: None });
                        continue;
                    };
                    match auth.apply(outcome, req.extensions_mut()) {
                        Ok(()) => {
                            let fut = inner.call(req);
                            this.state.set(State::Inner { fut });
                        }
                        Err(r) => this.state.set(State::Respond {
                            response: Some(reject_response(&r)),
                        }),
                    }
                }
            }
        }
    }
}

pub(super) fn reject_response(r: &Rejection) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::new());
    *resp.status_mut() = r.status;
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, r.challenge.clone());
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(super) fn metadata_response(m: &ProtectedResourceMetadata) -> Response<Bytes> {
    m.response()
}
