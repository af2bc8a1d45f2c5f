//! Which optimizer group a parameter belongs to: ONE function, [`route`], over Hugging Face Mamba
//! parameter names (and ranks, to catch a name attached to the wrong tensor).
//!
//! | name (under `backbone.`)            | rank | hybrid         | adamw          |
//! |-------------------------------------|------|----------------|----------------|
//! | `layers.{i}.mixer.in_proj.weight`   | 2    | Muon           | AdamWDecay     |
//! | `layers.{i}.mixer.x_proj.weight`    | 2    | Muon           | AdamWDecay     |
//! | `layers.{i}.mixer.out_proj.weight`  | 2    | Muon           | AdamWDecay     |
//! | `embeddings.weight` (= tied LM head)| 2    | AdamWDecay     | AdamWDecay     |
//! | `layers.{i}.mixer.conv1d.weight`    | 3    | AdamWDecay     | AdamWDecay     |
//! | `layers.{i}.mixer.dt_proj.weight`   | 2    | AdamWDecay     | AdamWDecay     |
//! | `layers.{i}.mixer.conv1d.bias`      | 1    | AdamWNoDecay   | AdamWNoDecay   |
//! | `layers.{i}.mixer.dt_proj.bias`     | 1    | AdamWNoDecay   | AdamWNoDecay   |
//! | `layers.{i}.mixer.A_log`            | 2    | AdamWNoDecay   | AdamWNoDecay   |
//! | `layers.{i}.mixer.D`                | 1    | AdamWNoDecay   | AdamWNoDecay   |
//! | `layers.{i}.norm.weight`            | 1    | AdamWNoDecay   | AdamWNoDecay   |
//! | `norm_f.weight`                     | 1    | AdamWNoDecay   | AdamWNoDecay   |
//!
//! Issue 3: Muon only for the 2-D hidden matrices; no weight decay on A_log, D, norms and biases.
//! Anything else is an error, never a silent default.

use super::error::{OptimError, Result};
use serde::{Deserialize, Serialize};

/// `--optimizer hybrid|adamw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Muon for in_proj/x_proj/out_proj weights, AdamW for everything else (the default).
    Hybrid,
    /// AdamW for every parameter (the hidden matrices join the weight-decay group).
    #[value(name = "adamw")]
    AdamW,
}

/// The optimizer group of one parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// Orthogonalized momentum (Muon), with decoupled weight decay.
    Muon,
    /// AdamW with decoupled weight decay.
    AdamWDecay,
    /// AdamW without weight decay (A_log, D, norms, biases).
    AdamWNoDecay,
}

/// What a parameter is, independent of the optimizer kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    HiddenMatrix,
    Decay,
    NoDecay,
}

/// Role and expected rank of a name below `backbone.layers.{i}.`, or `None` if unknown.
fn layer_role(rest: &str) -> Option<(Role, usize)> {
    Some(match rest {
        "mixer.in_proj.weight" | "mixer.x_proj.weight" | "mixer.out_proj.weight" => (Role::HiddenMatrix, 2),
        "mixer.conv1d.weight" => (Role::Decay, 3),
        "mixer.dt_proj.weight" => (Role::Decay, 2),
        "mixer.conv1d.bias" | "mixer.dt_proj.bias" | "mixer.D" | "norm.weight" => (Role::NoDecay, 1),
        "mixer.A_log" => (Role::NoDecay, 2),
        _ => return None,
    })
}

/// Role and expected rank of a full parameter name, or `None` if unknown.
fn role(name: &str) -> Option<(Role, usize)> {
    let rest = name.strip_prefix("backbone.")?;
    match rest {
        "embeddings.weight" => return Some((Role::Decay, 2)),
        "norm_f.weight" => return Some((Role::NoDecay, 1)),
        _ => {}
    }
    let rest = rest.strip_prefix("layers.")?;
    let (index, rest) = rest.split_once('.')?;
    // A layer index is a plain decimal number ("07" or "+1" would not come from our model).
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    layer_role(rest)
}

/// The group of parameter `name` with shape `shape` under optimizer `kind`.
///
/// Errors: an unknown name ([`OptimError::UnknownParameter`]) or a rank that does not fit the
/// name ([`OptimError::BadParameterShape`]).
pub fn route(name: &str, shape: &[usize], kind: OptimizerKind) -> Result<Group> {
    let (role, rank) = role(name).ok_or_else(|| OptimError::UnknownParameter(name.to_string()))?;
    if shape.len() != rank {
        let expected = match rank {
            1 => "a 1-D tensor",
            2 => "a 2-D matrix",
            _ => "a 3-D tensor (d_inner, 1, d_conv)",
        };
        return Err(OptimError::BadParameterShape { name: name.to_string(), shape: shape.to_vec(), expected });
    }
    Ok(match (role, kind) {
        (Role::HiddenMatrix, OptimizerKind::Hybrid) => Group::Muon,
        (Role::HiddenMatrix, OptimizerKind::AdamW) | (Role::Decay, _) => Group::AdamWDecay,
        (Role::NoDecay, _) => Group::AdamWNoDecay,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// All names and shapes of a 2-layer model (d_model 8, d_inner 16, d_state 4, dt_rank 2,
    /// d_conv 4, vocab 32), in the order the model lists them, with the expected hybrid group.
    fn two_layer_model() -> Vec<(String, Vec<usize>, Group)> {
        use Group::*;
        let mut v = vec![("backbone.embeddings.weight".to_string(), vec![32, 8], AdamWDecay)];
        for i in 0..2 {
            let p = format!("backbone.layers.{i}.");
            v.extend([
                (format!("{p}norm.weight"), vec![8], AdamWNoDecay),
                (format!("{p}mixer.A_log"), vec![16, 4], AdamWNoDecay),
                (format!("{p}mixer.D"), vec![16], AdamWNoDecay),
                (format!("{p}mixer.in_proj.weight"), vec![32, 8], Muon),
                (format!("{p}mixer.conv1d.weight"), vec![16, 1, 4], AdamWDecay),
                (format!("{p}mixer.conv1d.bias"), vec![16], AdamWNoDecay),
                (format!("{p}mixer.x_proj.weight"), vec![10, 16], Muon),
                (format!("{p}mixer.dt_proj.weight"), vec![16, 2], AdamWDecay),
                (format!("{p}mixer.dt_proj.bias"), vec![16], AdamWNoDecay),
                (format!("{p}mixer.out_proj.weight"), vec![8, 16], Muon),
            ]);
        }
        v.push(("backbone.norm_f.weight".to_string(), vec![8], AdamWNoDecay));
        v
    }

    #[test]
    fn routing_table_hybrid() {
        let model = two_layer_model();
        for (name, shape, want) in &model {
            assert_eq!(route(name, shape, OptimizerKind::Hybrid).unwrap(), *want, "{name}");
        }
        let muon = model.iter().filter(|m| m.2 == Group::Muon).count();
        assert_eq!(muon, 6, "3 Muon matrices per layer");
    }

    #[test]
    fn routing_table_adamw_only() {
        for (name, shape, hybrid) in two_layer_model() {
            let want = if hybrid == Group::Muon { Group::AdamWDecay } else { hybrid };
            assert_eq!(route(&name, &shape, OptimizerKind::AdamW).unwrap(), want, "{name}");
        }
    }

    #[test]
    fn unknown_names_are_errors() {
        for name in [
            "lm_head.weight",
            "backbone.embedding.weight",
            "backbone.layers.0.mixer.q_proj.weight",
            "backbone.layers.x.mixer.in_proj.weight",
            "backbone.layers..mixer.in_proj.weight",
            "layers.0.mixer.in_proj.weight",
            "backbone.layers.0.mixer.in_proj.weight.extra",
            "backbone.layers.0.mixer.a_log",
        ] {
            let err = route(name, &[4, 4], OptimizerKind::Hybrid).unwrap_err();
            assert!(matches!(err, OptimError::UnknownParameter(ref n) if n == name), "{name}: {err}");
        }
    }

    #[test]
    fn wrong_rank_is_an_error() {
        let err = route("backbone.layers.3.mixer.in_proj.weight", &[32], OptimizerKind::Hybrid).unwrap_err();
        assert!(matches!(err, OptimError::BadParameterShape { .. }), "{err}");
        let err = route("backbone.layers.3.mixer.conv1d.weight", &[16, 4], OptimizerKind::AdamW).unwrap_err();
        assert!(err.to_string().contains("conv1d"), "{err}");
    }

    #[test]
    fn kind_parses_from_cli_and_serde() {
        use clap::ValueEnum;
        assert_eq!(OptimizerKind::from_str("hybrid", false).unwrap(), OptimizerKind::Hybrid);
        assert_eq!(OptimizerKind::from_str("adamw", false).unwrap(), OptimizerKind::AdamW);
        assert_eq!(serde_json::to_string(&OptimizerKind::AdamW).unwrap(), "\"adamw\"");
        let k: OptimizerKind = serde_json::from_str("\"hybrid\"").unwrap();
        assert_eq!(k, OptimizerKind::Hybrid);
    }
}
