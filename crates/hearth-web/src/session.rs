//! A conversation with one model: the tokens its KV cache holds, and the generation under way.
//! A new prompt runs only from where it departs from the cached tokens, so a chat that grows
//! turn by turn pays for each turn's new tokens alone.
//!
//! Recurrent state (delta-net layers) cannot be cut back to any prefix, only to a snapshot, and
//! the backend keeps the two latest. They are taken where they serve the next request: where a
//! request departs from the one before (the end of the previous reply, when a chat goes on:
//! editing the next message comes back there) and just before the prompt's last token (asking
//! the same again, for another reply, reruns that one token only).

use hearth_core::chat::{ChatTemplate, Message};
use hearth_core::model::ModelSpec;
use hearth_core::sampling::{Sampler, SamplingError, SamplingOptions, StopMatcher};
use hearth_core::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::error::WebError;
use crate::ModelInfo;
use hearth_gpu::Backend;

/// Options of one generation, as the JS side passes them.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub sampling: SamplingOptions,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            stop: Vec::new(),
            sampling: SamplingOptions::default(),
        }
    }
}

impl From<SamplingError> for WebError {
    fn from(e: SamplingError) -> Self {
        match e {
            SamplingError::NanLogit(_) => WebError::Gpu(e.to_string()),
            other => WebError::BadRequest(other.to_string()),
        }
    }
}

/// An OpenAI-style message; `content` has been flattened to text by the JS side.
#[derive(Deserialize)]
pub struct ChatMessage {
    role: String,
    content: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    prompt_tokens: usize,
    /// Prompt tokens whose keys and values were already in the cache.
    cached_tokens: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepOut {
    text: String,
    token: Option<u32>,
    /// "stop" or "length" on the last step, as OpenAI's `finish_reason`.
    finish_reason: Option<&'static str>,
    completion_tokens: usize,
}

struct Generation {
    sampler: Sampler,
    stops: StopMatcher,
    max_tokens: usize,
    /// Tokens to run before the next one can be chosen.
    pending: Vec<u32>,
    /// Tokens chosen, the end-of-generation token excluded.
    generated: Vec<u32>,
    /// Length of the text decoded from `generated` so far (complete characters only).
    decoded: usize,
    done: bool,
}

pub struct Session {
    backend: Backend,
    tokenizer: Tokenizer,
    spec: ModelSpec,
    info: ModelInfo,
    template: Option<ChatTemplate>,
    /// The tokens whose keys and values the backend's cache holds, in order.
    cached: Vec<u32>,
    generation: Option<Generation>,
}

impl Session {
    pub fn new(
        backend: Backend,
        tokenizer: Tokenizer,
        spec: ModelSpec,
        info: ModelInfo,
        template: Option<ChatTemplate>,
    ) -> Self {
        Session {
            backend,
            tokenizer,
            spec,
            info,
            template,
            cached: Vec::new(),
            generation: None,
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The chat rendered with the model's template, the assistant's turn opened.
    pub fn render_chat(&mut self, messages: &[ChatMessage]) -> Result<String, WebError> {
        let template = self.template.as_mut().ok_or_else(|| {
            WebError::BadRequest(
                "the model has no chat template; use generate() with a prompt".into(),
            )
        })?;
        #[cfg(target_arch = "wasm32")]
        template.set_now((js_sys::Date::now() / 1000.0) as i64);
        let messages: Vec<Message> = messages
            .iter()
            .map(|m| Message::new(m.role.clone(), m.content.clone()))
            .collect();
        template
            .render(&messages, true)
            .map_err(|e| WebError::BadRequest(e.to_string()))
    }

    pub fn begin(
        &mut self,
        prompt: Vec<u32>,
        options: GenerateOptions,
    ) -> Result<Started, WebError> {
        if prompt.is_empty() {
            return Err(WebError::BadRequest("the prompt has no tokens".into()));
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= self.spec.n_vocab) {
            return Err(WebError::BadRequest(format!(
                "token {id} is outside the vocabulary of {}",
                self.spec.n_vocab
            )));
        }
        if prompt.len() >= self.backend.capacity() {
            return Err(WebError::ContextFull(format!(
                "the prompt has {} tokens; the context holds {}",
                prompt.len(),
                self.backend.capacity()
            )));
        }
        if options.max_tokens == 0 {
            return Err(SamplingError::MaxTokens.into());
        }
        let mut sampler = Sampler::new(options.sampling)?;
        for &t in &prompt {
            sampler.accept(t);
        }
        let stops = StopMatcher::new(options.stop)?;
        // At least one prompt token runs, for the logits of the first new token.
        let shared = self
            .cached
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        // Recurrent state may only come back to an earlier checkpoint.
        let kept = self.backend.truncate(shared);
        self.cached.truncate(kept);
        if kept > 0 {
            // Where this request departs from the last one (restored there already, or the end
            // of the reply it goes on from); no-op without recurrent layers.
            self.backend.checkpoint();
        }
        self.generation = Some(Generation {
            sampler,
            stops,
            max_tokens: options.max_tokens,
            pending: prompt[kept..].to_vec(),
            generated: Vec::new(),
            decoded: 0,
            done: false,
        });
        Ok(Started {
            prompt_tokens: prompt.len(),
            cached_tokens: kept,
        })
    }

    /// Runs what is pending and chooses the next token.
    pub async fn step(&mut self) -> Result<StepOut, WebError> {
        let g = self
            .generation
            .as_mut()
            .filter(|g| !g.done)
            .ok_or_else(|| WebError::BadRequest("no generation is under way".into()))?;
        let mut pending = std::mem::take(&mut g.pending);
        if self.spec.is_recurrent() && pending.len() > 1 {
            // The prompt but its last token, then a snapshot: the same prompt again (another
            // reply) restores it and runs one token. The token chosen here is dropped.
            let last = pending.split_off(pending.len() - 1);
            let mut greedy = Sampler::new(SamplingOptions::default())?;
            if let Err(e) = self.backend.next_token(&pending, &mut greedy).await {
                g.done = true;
                return Err(self.resync(e.into()));
            }
            self.cached.extend_from_slice(&pending);
            self.backend.checkpoint();
            pending = last;
        }
        let token = match self.backend.next_token(&pending, &mut g.sampler).await {
            Ok(t) => t,
            Err(e) => {
                g.done = true;
                return Err(self.resync(e.into()));
            }
        };
        self.cached.extend_from_slice(&pending);
        g.sampler.accept(token);

        let at_end = self.tokenizer.is_stop(token);
        if !at_end {
            g.generated.push(token);
        }
        // The decoder is rebuilt from the start each step: it borrows the tokenizer, which the
        // session owns, and decoding is cheap next to a forward pass.
        let mut decoder = self.tokenizer.stream_decoder(true);
        let mut full: String = g.generated.iter().map(|&t| decoder.push(t)).collect();
        let out_of_room = self.cached.len() + 1 >= self.backend.capacity();
        let last = at_end || g.generated.len() >= g.max_tokens || out_of_room;
        if last {
            full.push_str(&decoder.finish());
        }
        let (mut text, stopped) = g.stops.push(&full[g.decoded..]);
        g.decoded = full.len();
        let finish_reason = if stopped || at_end {
            Some("stop")
        } else if last {
            text.push_str(&g.stops.flush());
            Some("length")
        } else {
            None
        };
        g.done = finish_reason.is_some();
        if !g.done {
            g.pending.push(token);
        }
        Ok(StepOut {
            text,
            token: (!at_end).then_some(token),
            finish_reason,
            completion_tokens: g.generated.len() + usize::from(at_end),
        })
    }

    /// Keeps the record of the cache true to what the backend holds after a failed step, and
    /// passes the error on.
    fn resync(&mut self, e: WebError) -> WebError {
        let held = self.backend.positions().min(self.cached.len());
        let kept = self.backend.truncate(held);
        self.cached.truncate(kept);
        e
    }

    /// Forgets the conversation the cache holds.
    pub fn reset(&mut self) {
        self.cached.clear();
        self.backend.truncate(0);
        self.generation = None;
    }
}
