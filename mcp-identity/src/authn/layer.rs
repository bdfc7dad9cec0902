use std::sync::Arc;

use tower_layer::Layer;

use super::{Authenticator, service::Authn};

/// Authenticates HTTP requests; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct AuthnLayer {
    pub(super) auth: Arc<Authenticator>,
}

impl AuthnLayer {
    /// A layer around an [`Authenticator`].
    pub fn new(auth: Authenticator) -> Self {
        Self {
            auth: Arc::new(auth),
        }
    }

    /// A layer sharing an existing authenticator.
    pub fn from_shared(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        &self.auth
    }
}

impl<S> Layer<S> for AuthnLayer {
    type Service = Authn<S>;

    fn layer(&self, inner: S) -> Authn<S> {
        Authn {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}
