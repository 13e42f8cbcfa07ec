//! A conversation with one model: the tokens its KV cache holds, and the generation under way.
//! A new prompt runs only from where it departs from the cached tokens, so a chat that grows
//! turn by turn pays for each turn's new tokens alone.
//!
//! Recurrent state (delta-net layers) cannot be cut back to any prefix, only to a snapshot, and
//! the backend keeps the two latest. They are taken where they serve the next request: where a
//! request departs from the one before (the end of the previous reply, when a chat goes on:
//! editing the next message comes back there) and just before the prompt's last token (asking
//! the same again, for another reply, reruns that one token only).

use std::sync::Arc;

use hearth_core::chat::tools::{ReplyStream, ToolCall};
use hearth_core::chat::{to_template_value, ChatTemplate};
use hearth_core::constrain::Grammars;
use hearth_core::model::ModelSpec;
use hearth_core::sampling::{self, FinishReason, Generator, Sampler, SamplingOptions};
use hearth_core::tokenizer::Tokenizer;
use serde::Serialize;

use crate::error::WebError;
use crate::request::{template_tools, ChatMessage, GenerateRequest};
use crate::ModelInfo;
use hearth_gpu::Backend;

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
    /// Text of the reply (never of a tool call).
    text: String,
    token: Option<u32>,
    /// "stop", "length", "constraint" or "tool_calls" on the last step.
    finish_reason: Option<&'static str>,
    completion_tokens: usize,
    /// On the last step of a reply to tools: the calls it made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall>,
}

struct Generation {
    generator: Generator,
    /// Tokens to run before the next one can be chosen.
    pending: Vec<u32>,
    /// Where the reply may call tools: its text, held back where it may be a call.
    reply: Option<ReplyStream>,
}

pub struct Session {
    backend: Backend,
    tokenizer: Arc<Tokenizer>,
    /// The tokenizer's vocabulary for output formats, made at the first that needs it.
    grammars: Option<Grammars>,
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
            tokenizer: Arc::new(tokenizer),
            grammars: None,
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

    pub fn backend_mut(&mut self) -> &mut Backend {
        &mut self.backend
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The chat rendered with the model's template, the assistant's turn opened; `tools` (JSON
    /// text of OpenAI's list) are shown to the model as its template shows them.
    pub fn render_chat(
        &mut self,
        messages: &[ChatMessage],
        tools: Option<&str>,
    ) -> Result<String, WebError> {
        let template = self.template.as_mut().ok_or_else(|| {
            WebError::BadRequest(
                "the model has no chat template; use generate() with a prompt".into(),
            )
        })?;
        #[cfg(target_arch = "wasm32")]
        template.set_now((js_sys::Date::now() / 1000.0) as i64);
        let tools = tools.map(template_tools).transpose()?;
        template
            .render_values(
                to_template_value(&messages),
                true,
                tools.as_ref().map(to_template_value),
                &[],
            )
            .map_err(|e| WebError::BadRequest(e.to_string()))
    }

    pub fn begin(
        &mut self,
        prompt: Vec<u32>,
        options: GenerateRequest,
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
        let syntax = self.template.as_ref().and_then(ChatTemplate::tool_syntax);
        let held = options.held(syntax)?;
        // The context bounds the reply: the last token chosen is never run.
        let room = self.backend.capacity() - prompt.len();
        let mut generator = Generator::new(
            self.tokenizer.clone(),
            sampling::GenerateOptions {
                sampling: options.sampling,
                max_tokens: options.max_tokens.min(room),
                stop: options.stop,
                ignore_eos: false,
            },
            &prompt,
        )?;
        let mut reply = None;
        if let Some(held) = held {
            let grammars = match &mut self.grammars {
                Some(grammars) => grammars,
                none => none.insert(Grammars::new(self.tokenizer.clone())?),
            };
            let constraint = grammars
                .compile(&held.format)
                .map_err(|e| WebError::BadRequest(format!("{}: {e}", held.name)))?;
            generator.constrain(constraint);
            reply = held.tools.map(ReplyStream::new);
        }
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
            generator,
            pending: prompt[kept..].to_vec(),
            reply,
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
            .filter(|g| g.generator.finished().is_none())
            .ok_or_else(|| WebError::BadRequest("no generation is under way".into()))?;
        let mut pending = std::mem::take(&mut g.pending);
        if self.spec.is_recurrent() && pending.len() > 1 {
            // The prompt but its last token, then a snapshot: the same prompt again (another
            // reply) restores it and runs one token. The token chosen here is dropped.
            let last = pending.split_off(pending.len() - 1);
            let mut greedy = Sampler::new(SamplingOptions::default())?;
            if let Err(e) = self.backend.next_token(&pending, &mut greedy, None).await {
                self.generation = None;
                return Err(self.resync(e.into()));
            }
            self.cached.extend_from_slice(&pending);
            self.backend.checkpoint();
            pending = last;
        }
        let step = match self.backend.step(&pending, &mut g.generator).await {
            Ok(step) => step,
            Err(e) => {
                self.generation = None;
                return Err(self.resync(e.into()));
            }
        };
        self.cached.extend_from_slice(&pending);
        let at_end = self.tokenizer.is_stop(step.token);
        let mut finish_reason = step.finished.map(FinishReason::as_str);
        let (mut text, mut tool_calls) = (step.text, Vec::new());
        if let Some(reply) = &mut g.reply {
            text = reply.push(&text);
        }
        if finish_reason.is_some() {
            if let Some(reply) = g.reply.take() {
                let (rest, calls) = reply.finish();
                text.push_str(&rest);
                if !calls.is_empty() {
                    finish_reason = Some("tool_calls");
                }
                tool_calls = calls;
            }
        } else {
            g.pending.push(step.token);
        }
        Ok(StepOut {
            text,
            token: (!at_end).then_some(step.token),
            finish_reason,
            completion_tokens: g.generator.generated().len(),
            tool_calls,
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
