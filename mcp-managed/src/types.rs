//! Instance types: a small registry that maps a spec's `kind` to an image and a command template,
//! and to a health contract, so that adding a new kind of server is one entry.

use std::{collections::BTreeMap, sync::Arc};

use crate::spec::{HealthContract, InstanceSpec, SpecError};

/// A part of a command template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A literal argument.
    Lit(String),
    /// The spec's `package` (required).
    Package,
    /// The spec's `command` (required).
    Command,
    /// The spec's `args`, each its own argument.
    Args,
}

/// One kind of server: how to turn a spec into a command (and an image, for containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceType {
    /// The kind name specs refer to.
    pub name: String,
    /// The image used when the spec names none (`None`: the spec must name one).
    pub image: Option<String>,
    /// Whether the spec must name its own image.
    pub requires_image: bool,
    /// The command template.
    pub template: Vec<Part>,
    /// Health defaults for this kind.
    pub health: HealthContract,
}

impl InstanceType {
    /// A type with a command template, no image and the default health contract.
    pub fn new(name: impl Into<String>, template: Vec<Part>) -> Self {
        Self {
            name: name.into(),
            image: None,
            requires_image: false,
            template,
            health: HealthContract::default(),
        }
    }

    /// The image used when a spec names none.
    #[must_use]
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Specs of this type must name their image.
    #[must_use]
    pub fn requires_image(mut self) -> Self {
        self.requires_image = true;
        self
    }

    /// The health contract.
    #[must_use]
    pub fn health(mut self, health: HealthContract) -> Self {
        self.health = health;
        self
    }
}

/// A spec resolved against its type: the exact argv the bridge runs, and the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The validated spec.
    pub spec: InstanceSpec,
    /// The server's argv (program first).
    pub argv: Vec<String>,
    /// The image for container runtimes, if the type or spec has one.
    pub image: Option<String>,
    /// The health contract (type defaults with the spec's overrides).
    pub health: HealthContract,
}

/// The registry of instance types. [`InstanceTypes::default`] holds `npx`, `uvx`, `image` and
/// `command`.
#[derive(Debug, Clone)]
pub struct InstanceTypes {
    types: Arc<BTreeMap<String, InstanceType>>,
}

impl Default for InstanceTypes {
    fn default() -> Self {
        use Part::*;
        // Package runners may download on first start.
        let slow = HealthContract {
            ready_timeout: std::time::Duration::from_secs(120),
            ..Default::default()
        };
        Self::empty()
            .with(
                InstanceType::new(
                    "npx",
                    vec![Lit("npx".into()), Lit("-y".into()), Package, Args],
                )
                .image("node:22-alpine")
                .health(slow),
            )
            .with(
                InstanceType::new("uvx", vec![Lit("uvx".into()), Package, Args])
                    .image("ghcr.io/astral-sh/uv:python3.12-alpine")
                    .health(slow),
            )
            .with(InstanceType::new("image", vec![Command, Args]).requires_image())
            .with(InstanceType::new("command", vec![Command, Args]))
    }
}

impl InstanceTypes {
    /// A registry without any type.
    pub fn empty() -> Self {
        Self {
            types: Arc::new(BTreeMap::new()),
        }
    }

    /// Adds (or replaces) a type.
    #[must_use]
    pub fn with(mut self, ty: InstanceType) -> Self {
        Arc::make_mut(&mut self.types).insert(ty.name.clone(), ty);
        self
    }

    /// The type called `name`.
    pub fn get(&self, name: &str) -> Option<&InstanceType> {
        self.types.get(name)
    }

    /// The names of all types.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Validates `spec` and resolves it against its type.
    pub fn resolve(&self, spec: &InstanceSpec) -> Result<Resolved, SpecError> {
        spec.validate()?;
        let ty = self.get(&spec.kind).ok_or_else(|| {
            SpecError::new(
                &spec.name,
                "kind",
                format!(
                    "unknown kind `{}` (known: {})",
                    spec.kind,
                    self.names().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        let mut argv = Vec::with_capacity(ty.template.len() + spec.args.len());
        for part in &ty.template {
            match part {
                Part::Lit(s) => argv.push(s.clone()),
                Part::Package => argv.push(spec.package.clone().ok_or_else(|| {
                    SpecError::new(
                        &spec.name,
                        "package",
                        format!("kind `{}` needs a package", ty.name),
                    )
                })?),
                Part::Command => argv.push(spec.command.clone().ok_or_else(|| {
                    SpecError::new(
                        &spec.name,
                        "command",
                        format!("kind `{}` needs a command", ty.name),
                    )
                })?),
                Part::Args => argv.extend(spec.args.iter().cloned()),
            }
        }
        if ty.requires_image && spec.image.is_none() {
            return Err(SpecError::new(
                &spec.name,
                "image",
                format!("kind `{}` needs an image", ty.name),
            ));
        }
        Ok(Resolved {
            spec: spec.clone(),
            argv,
            image: spec.image.clone().or_else(|| ty.image.clone()),
            health: spec.health.apply(ty.health),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve() {
        let types = InstanceTypes::default();
        let mut s = InstanceSpec::new("everything", "npx");
        s.package = Some("@modelcontextprotocol/server-everything".into());
        s.args = vec!["stdio".into()];
        let r = types.resolve(&s).unwrap();
        assert_eq!(
            r.argv,
            [
                "npx",
                "-y",
                "@modelcontextprotocol/server-everything",
                "stdio"
            ]
        );
        assert_eq!(r.image.as_deref(), Some("node:22-alpine"));
        assert_eq!(r.health.ready_timeout.as_secs(), 120);
    }

    #[test]
    fn unknown_kind_and_missing_fields() {
        let types = InstanceTypes::default();
        let e = types.resolve(&InstanceSpec::new("x", "helm")).unwrap_err();
        assert_eq!(e.field(), "kind");
        assert!(
            e.problem().contains("known: command, image, npx, uvx"),
            "{e}"
        );
        let e = types.resolve(&InstanceSpec::new("x", "npx")).unwrap_err();
        assert_eq!(e.field(), "package");
        let mut s = InstanceSpec::new("x", "image");
        s.command = Some("/server".into());
        assert_eq!(types.resolve(&s).unwrap_err().field(), "image");
        let e = types
            .resolve(&InstanceSpec::new("x", "command"))
            .unwrap_err();
        assert_eq!(e.field(), "command");
    }

    #[test]
    fn a_new_kind_is_one_entry() {
        let types = InstanceTypes::default().with(
            InstanceType::new(
                "playwright",
                vec![
                    Part::Lit("npx".into()),
                    Part::Lit("@playwright/mcp".into()),
                    Part::Args,
                ],
            )
            .image("mcr.microsoft.com/playwright:v1"),
        );
        let r = types
            .resolve(&InstanceSpec::new("browser", "playwright"))
            .unwrap();
        assert_eq!(r.argv, ["npx", "@playwright/mcp"]);
    }
}
