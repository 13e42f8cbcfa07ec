// The per-step parameters every plan kernel may read: bound at a dynamic offset so that one
// command buffer can hold the steps of many prompt tokens.
struct Step {
    pos: u32,    // position of this token in the KV cache
    token: u32,  // its id
    row: u32,    // its row in the activation buffers (its index in the prompt chunk)
    count: u32,  // tokens in the chunk; kernels over the whole chunk bind its first step
}

@group(0) @binding(0) var<uniform> step: Step;
