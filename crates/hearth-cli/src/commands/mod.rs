pub mod generate;
pub mod inspect;
pub mod logits;
pub mod quantize;
