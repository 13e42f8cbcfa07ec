//! Per-sequence state: a KV cache for each attention layer (under a sliding window, a ring of
//! the window's positions and [`RING_SLACK`] more), convolution and delta-rule state for each
//! delta-net layer (convolution state alone for a short-convolution layer), and snapshots of
//! the recurrent part, which cannot be cut back to a prefix the way a KV cache can.

use crate::model::spec::{Attention, Mixer, ModelSpec};

/// Positions a sliding window's ring keeps beyond the window, so that a chat can go back over
/// a reply's last tokens without running the whole context again (the GPU's ring keeps as many,
/// a prompt chunk's).
pub const RING_SLACK: usize = 64;

/// Recurrent snapshots kept: where the last prompt ended and where the last reply ended, the
/// two places the next chat turn can continue from.
pub const SNAPSHOTS: usize = 2;

#[derive(Clone, Debug)]
enum LayerState {
    Kv {
        k: Vec<f32>,
        v: Vec<f32>,
        attention: Attention,
        /// Positions the cache holds: under a window a ring of this many slots, else all.
        slots: usize,
    },
    /// `delta` is empty for a short-convolution layer.
    Recurrent { conv: Vec<f32>, delta: Vec<f32> },
}

#[derive(Clone, Debug)]
struct Snapshot {
    len: usize,
    /// (conv, delta) of each recurrent layer, in layer order.
    recurrent: Vec<(Vec<f32>, Vec<f32>)>,
}

#[derive(Clone, Debug)]
pub struct State {
    layers: Vec<LayerState>,
    len: usize,
    max: usize,
    snapshots: Vec<Snapshot>,
}

impl State {
    /// An empty state for up to `max` positions.
    pub fn new(spec: &ModelSpec, max: usize) -> Self {
        let layers = spec
            .layers
            .iter()
            .map(|l| match &l.mixer {
                Mixer::Attention(a) => LayerState::Kv {
                    k: Vec::new(),
                    v: Vec::new(),
                    attention: a.clone(),
                    slots: a.cache_slots(max, RING_SLACK),
                },
                Mixer::DeltaNet(d) => LayerState::Recurrent {
                    conv: vec![0.0; d.conv_state_len()],
                    delta: vec![0.0; d.delta_state_len()],
                },
                Mixer::ShortConv(c) => LayerState::Recurrent {
                    conv: vec![0.0; c.conv_state_len()],
                    delta: Vec::new(),
                },
            })
            .collect();
        State {
            layers,
            len: 0,
            max,
            snapshots: Vec::new(),
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions this state may hold.
    pub fn capacity(&self) -> usize {
        self.max
    }

    pub(super) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Layer `l`'s key and value caches.
    pub(super) fn kv(&mut self, l: usize) -> (&mut Vec<f32>, &mut Vec<f32>) {
        match &mut self.layers[l] {
            LayerState::Kv { k, v, .. } => (k, v),
            LayerState::Recurrent { .. } => unreachable!("layer {l} keeps no KV cache"),
        }
    }

    /// Layer `l`'s convolution and delta-rule state.
    pub(super) fn recurrent(&mut self, l: usize) -> (&mut [f32], &mut [f32]) {
        match &mut self.layers[l] {
            LayerState::Recurrent { conv, delta } => (conv, delta),
            LayerState::Kv { .. } => unreachable!("layer {l} keeps no recurrent state"),
        }
    }

    fn recurrent_parts(&self) -> Vec<(Vec<f32>, Vec<f32>)> {
        self.layers
            .iter()
            .filter_map(|l| match l {
                LayerState::Recurrent { conv, delta } => Some((conv.clone(), delta.clone())),
                LayerState::Kv { .. } => None,
            })
            .collect()
    }

    fn is_recurrent(&self) -> bool {
        self.layers
            .iter()
            .any(|l| matches!(l, LayerState::Recurrent { .. }))
    }

    /// Remembers the recurrent state at the current position, so that [`State::truncate`] can
    /// come back here; keeps the [`SNAPSHOTS`] latest. Nothing to do without recurrent layers.
    pub fn checkpoint(&mut self) {
        if !self.is_recurrent() || self.snapshots.iter().any(|s| s.len == self.len) {
            return;
        }
        if self.snapshots.len() == SNAPSHOTS {
            self.snapshots.remove(0);
        }
        self.snapshots.push(Snapshot {
            len: self.len,
            recurrent: self.recurrent_parts(),
        });
    }

    /// Whether every ring still holds what the positions up to `len` need.
    fn rings_keep(&self, len: usize) -> bool {
        self.layers.iter().all(|l| match l {
            LayerState::Kv {
                attention, slots, ..
            } => attention.cache_keeps(*slots, self.len, len),
            LayerState::Recurrent { .. } => true,
        })
    }

    /// The slots of layer `l`'s ring, where it attends within a window.
    pub(super) fn ring(&self, l: usize) -> Option<usize> {
        match &self.layers[l] {
            LayerState::Kv {
                attention, slots, ..
            } => attention.window.map(|_| *slots),
            LayerState::Recurrent { .. } => None,
        }
    }

    /// Keeps at most the first `len` positions and returns how many it kept: `len` (or fewer
    /// if fewer are held) for attention alone; with recurrent layers, the longest snapshot at
    /// or before `len` (0 when there is none), whose state is restored; 0 once a sliding
    /// window's ring has wrapped. The caller runs the tokens from there on again.
    pub fn truncate(&mut self, len: usize) -> usize {
        if len >= self.len {
            return self.len;
        }
        let keep = if !self.rings_keep(len) {
            self.reset_recurrent();
            0
        } else if self.is_recurrent() {
            let snap = self
                .snapshots
                .iter()
                .filter(|s| s.len <= len)
                .max_by_key(|s| s.len);
            match snap {
                Some(s) => {
                    let mut parts = s.recurrent.iter();
                    for layer in &mut self.layers {
                        if let LayerState::Recurrent { conv, delta } = layer {
                            let (c, d) = parts.next().expect("one part per recurrent layer");
                            conv.copy_from_slice(c);
                            delta.copy_from_slice(d);
                        }
                    }
                    s.len
                }
                None => {
                    self.reset_recurrent();
                    0
                }
            }
        } else {
            len
        };
        for layer in &mut self.layers {
            match layer {
                // A ring that has wrapped keeps every slot: later positions overwrite them.
                LayerState::Kv { slots, .. } if self.len > *slots => {}
                LayerState::Kv {
                    k, v, attention, ..
                } => {
                    k.truncate(keep * attention.k_dim());
                    v.truncate(keep * attention.v_dim());
                }
                LayerState::Recurrent { .. } => {}
            }
        }
        self.snapshots.retain(|s| s.len <= keep);
        self.len = keep;
        keep
    }

    fn reset_recurrent(&mut self) {
        for layer in &mut self.layers {
            if let LayerState::Recurrent { conv, delta } = layer {
                conv.fill(0.0);
                delta.fill(0.0);
            }
        }
    }

    /// Bytes held: the KV caches as filled so far, the recurrent state and its snapshots.
    pub fn bytes(&self) -> u64 {
        let floats: usize = self
            .layers
            .iter()
            .map(|l| match l {
                LayerState::Kv { k, v, .. } => k.len() + v.len(),
                LayerState::Recurrent { conv, delta } => conv.len() + delta.len(),
            })
            .sum::<usize>()
            + self
                .snapshots
                .iter()
                .flat_map(|s| &s.recurrent)
                .map(|(c, d)| c.len() + d.len())
                .sum::<usize>();
        floats as u64 * 4
    }
}
