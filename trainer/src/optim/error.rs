//! Errors of the optimizer: a misnamed or misshaped parameter, gradients or checkpoint state that
//! do not line up with the parameters, and errors from candle itself.

/// Everything the optimizer can fail with. Each variant names the parameter or state tensor.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("unknown parameter name `{0}`: the optimizer routing knows only Hugging Face Mamba names (backbone.embeddings.weight, backbone.layers.{{i}}.…, backbone.norm_f.weight)")]
    UnknownParameter(String),

    #[error("parameter `{name}` has shape {shape:?}, expected {expected}")]
    BadParameterShape { name: String, shape: Vec<usize>, expected: &'static str },

    #[error("parameter `{0}` is given twice")]
    DuplicateParameter(String),

    #[error("the optimizer was given no parameters")]
    NoParameters,

    #[error("gradient list does not match the parameters at position {index}: expected `{expected}`, got `{got}`")]
    GradNameMismatch { index: usize, expected: String, got: String },

    #[error("expected {expected} gradients (one per parameter, in parameter order), got {got}")]
    GradCountMismatch { expected: usize, got: usize },

    #[error("no gradient for parameter `{0}` (it did not take part in the loss)")]
    MissingGrad(String),

    #[error("gradient of `{name}` has shape {got:?}, the parameter has shape {expected:?}")]
    GradShapeMismatch { name: String, expected: Vec<usize>, got: Vec<usize> },

    #[error("optimizer state `{0}` is missing from the checkpoint")]
    MissingState(String),

    #[error("optimizer state `{name}` has shape {got:?} in the checkpoint, expected {expected:?}")]
    StateShapeMismatch { name: String, expected: Vec<usize>, got: Vec<usize> },

    #[error("the checkpoint has optimizer state `{0}` that belongs to no parameter of this model/optimizer (was it saved with another --optimizer or model?)")]
    UnexpectedState(String),

    #[error("invalid optimizer config: {0}")]
    BadConfig(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result with [`OptimError`].
pub type Result<T> = std::result::Result<T, OptimError>;
