// Sum over the LANES threads of each row: butterfly shuffles inside groups of SG lanes (SG is
// the device's smallest subgroup size, capped at LANES, so a group never straddles two
// subgroups), then workgroup memory across the LANES / SG groups when a subgroup holds less
// than a row. Replaces reduce_wg.wgsl where the `subgroups` feature exists; the loader puts
// `const SG` (and, for browsers, `enable subgroups;`) at the top of the module.

fn reduce_lanes(li: u32, lane: u32, v: f32) -> f32 {
    var r = v;
    for (var s = SG / 2u; s > 0u; s >>= 1u) {
        r += subgroupShuffleXor(r, s);
    }
    if (SG < LANES) {
        partial[li] = r;
        workgroupBarrier();
        if (lane == 0u) {
            for (var j = 1u; j < LANES / SG; j++) {
                r += partial[li + j * SG];
            }
        }
    }
    return r;
}
