//! Chat templates: the real templates of the tokenizer fixtures cut, spliced and seeded with
//! Jinja snippets, and small templates assembled from snippets, rendered over random
//! conversations. Nothing may panic, and every render ends within the budget's time.

use std::time::Duration;

use hearth_core::chat::{ChatTemplate, Message};
use hearth_core::gguf::Gguf;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;

use super::{fuzz, process_cpu_time};

const SNIPPETS: [&str; 26] = [
    "{{ messages[0].content }}",
    "{% for m in messages %}",
    "{% endfor %}",
    "{% if add_generation_prompt %}",
    "{% else %}",
    "{% endif %}",
    "{{ bos_token }}",
    "{{ m.role }}",
    "{{ m.content | trim }}",
    "{{ raise_exception('no') }}",
    "{% set x = 'ab' * 1000 %}",
    "{{ x * 1000 }}",
    "{{ range(100000) | list | length }}",
    "{% for i in range(1000) %}{% for j in range(1000) %}",
    "{% endfor %}{% endfor %}",
    "{{ messages | tojson(indent=2) }}",
    "{{ tools | tojson }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% set ns = namespace(x=[]) %}{% for i in range(1000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
    "{{ '{:>99999}'.format('x') }}",
    "{{ strftime_now('%Y') }}",
    "{{ loop.index }}",
    "{{ messages[-1]['content'].split(' ') | join('--') }}",
    "{{ (m.content ~ m.content) | replace('a', 'aaaa') }}",
    "{%- if m.role == 'user' -%}",
    "{{ x | upper }}",
];

fn real_templates() -> Vec<String> {
    let dir = hearth_fixtures::fixtures_dir();
    ["qwen3", "llama3", "llama2"]
        .into_iter()
        .map(|name| {
            let bytes = hearth_fixtures::gunzip(&dir.join(format!("tokenizers/{name}.gguf.gz")));
            let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
            header
                .get_str("tokenizer.chat_template")
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A char boundary of `s` at or before `at`.
fn boundary(s: &str, mut at: usize) -> usize {
    at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn mutate(rng: &mut ChaCha8Rng, real: &[String]) -> String {
    let mut s = if rng.random_bool(0.7) {
        real[rng.random_range(0..real.len())].clone()
    } else {
        String::new()
    };
    for _ in 0..rng.random_range(1..6) {
        let a = boundary(&s, rng.random_range(0..=s.len()));
        let b = boundary(&s, a + rng.random_range(0..200));
        match rng.random_range(0..4) {
            0 => s.replace_range(a..b, ""),
            1 => {
                let span = s[a..b].to_string();
                s.insert_str(b, &span);
            }
            _ => s.insert_str(a, SNIPPETS[rng.random_range(0..SNIPPETS.len())]),
        }
    }
    s
}

fn conversation(rng: &mut ChaCha8Rng) -> Vec<Message> {
    const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "x"];
    const TEXT: [&str; 6] = [
        "hi",
        "",
        "a b c",
        "日本 🙂",
        "{{ not a template }}",
        "<|im_end|>",
    ];
    (0..rng.random_range(0..6))
        .map(|_| {
            Message::new(
                ROLES[rng.random_range(0..ROLES.len())],
                TEXT[rng.random_range(0..TEXT.len())],
            )
        })
        .collect()
}

#[test]
fn mutated_and_assembled_templates() {
    let real = real_templates();
    fuzz(
        "chat-templates",
        300,
        |rng| {
            let mut input = mutate(rng, &real).into_bytes();
            // The conversation's seed follows the template, after a byte no template has.
            input.push(0xff);
            input.extend(rng.random::<u64>().to_le_bytes());
            input
        },
        |input| {
            let split = input.len() - 9;
            let source = std::str::from_utf8(&input[..split]).unwrap();
            let seed = u64::from_le_bytes(input[split + 1..].try_into().unwrap());
            let Ok(mut template) = ChatTemplate::new(
                source,
                [
                    ("bos_token", Some("<s>".into())),
                    ("eos_token", Some("</s>".into())),
                    ("unk_token", None),
                    ("pad_token", None),
                ],
            ) else {
                return;
            };
            template.set_now(0);
            let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
            for _ in 0..3 {
                let messages = conversation(&mut rng);
                // The whole process's CPU time, other tests' included: a render takes a
                // fraction of a second (see chat_budget), and this bound catches one that hangs.
                let start = process_cpu_time();
                let _ = template.render(&messages, rng.random());
                let took = process_cpu_time() - start;
                assert!(took < Duration::from_secs(3), "a render took {took:?}");
            }
        },
    );
}
