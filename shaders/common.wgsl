// The per-step parameters every plan kernel may read: bound at a dynamic offset so that one
// command buffer can hold the steps of many prompt tokens.
struct Step {
    pos: u32,    // position of this token in the KV cache
    token: u32,  // its id
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> step: Step;
