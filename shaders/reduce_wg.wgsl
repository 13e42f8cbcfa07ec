// Sum over the LANES threads of each row through workgroup memory: works everywhere.
fn reduce_lanes(li: u32, lane: u32, v: f32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    return partial[li];
}
