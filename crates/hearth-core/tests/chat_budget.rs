//! A chat template comes with the model file, so it is untrusted code: hostile templates end
//! in a budget error within a fraction of a second of CPU time and with bounded memory, and
//! real templates stay well inside the budget.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hearth_core::chat::{Budget, ChatError, ChatTemplate, Message};
use hearth_core::gguf::Gguf;
use hearth_core::tokenizer::Tokenizer;

mod common;
use common::process_cpu_time as cpu_time;

/// Counts the bytes held by the whole process, and the most held, to bound a render's memory
/// (it runs on a thread of its own). The tests here take [`SERIAL`] so that only one runs.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);
static SERIAL: Mutex<()> = Mutex::new(());

fn track(delta: isize) {
    let held = HELD.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(held, Ordering::Relaxed);
}

// SAFETY: every call goes to the system allocator unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            track(layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        track(-(layout.size() as isize));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            track(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Renders `source` over one message; returns the result, the CPU time and the peak of the
/// bytes held above what was held before.
fn measure(source: &str) -> (Result<String, ChatError>, Duration, usize) {
    let template = ChatTemplate::new(source, Default::default()).expect("parses");
    let messages = [Message::new("user", "hi")];
    let base = HELD.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = cpu_time();
    let result = template.render(&messages, true);
    let time = cpu_time() - start;
    (result, time, (PEAK.load(Ordering::Relaxed) - base) as usize)
}

/// Two lists in a namespace, each doubled 64 times (`x = [x, x]`): about 2^64 items, if
/// shared ones are counted every time they occur, as comparing or printing them does.
const DOUBLED: &str = "{% set ns = namespace(a=[], b=[]) %}{% for i in range(64) %}{% set ns.a = [ns.a, ns.a] %}{% set ns.b = [ns.b, ns.b] %}{% endfor %}";

/// What the default budget allows: 500,000 fuel is about 32 MB of data created.
const MAX_MEMORY: usize = 64 << 20;
const MAX_TIME: Duration = Duration::from_millis(500);

#[test]
fn hostile_templates_stop_quickly_with_bounded_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cases: &[(&str, &str, &str)] = &[
        (
            "nested loops",
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
            "fuel",
        ),
        (
            "nested loops over the messages",
            "{% for m in messages * 100000 %}{% for n in messages * 100000 %}{% endfor %}{% endfor %}",
            "fuel",
        ),
        ("huge repetition", "{{ 'a' * 10**9 }}", "fuel"),
        (
            "repetition of a repetition",
            "{% set s = 'a' * 1000000 %}{{ s * 1000 }}",
            "fuel",
        ),
        (
            "filters that multiply",
            "{{ ('a' * 100000) | replace('a', 'aaaaaaaaaa') | replace('a', 'aaaaaaaaaa') | replace('a', 'aaaaaaaaaa') }}",
            "fuel",
        ),
        (
            "methods that multiply",
            "{{ ('a' * 100000).replace('a', 'aaaaaaaaaa').replace('a', 'aaaaaaaaaa').replace('a', 'aaaaaaaaaa') }}",
            "fuel",
        ),
        ("indent", "{{ 'x' | indent(1000000000) }}", "fuel"),
        ("printf padding", "{{ '%1000000000s' | format('x') }}", "fuel"),
        (
            "str.format padding",
            "{{ '{:>1000000000}'.format('x') }}",
            "fuel",
        ),
        (
            "a macro calling itself",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursed deeper than 100",
        ),
        (
            "exponential joins",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = [ns.s, ns.s] | join %}{% endfor %}{{ ns.s }}",
            "bytes of text to print",
        ),
        (
            "exponential concatenation",
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
            "fuel",
        ),
        (
            "a deeply nested list printed",
            "{% set ns = namespace(x=[]) %}{% for i in range(50000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
            "nested deeper than 128",
        ),
        (
            "a deeply nested list as a string",
            "{% set ns = namespace(x=[]) %}{% for i in range(50000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x | string | length }}",
            "nested deeper than 128",
        ),
        (
            "a deeply nested list joined",
            "{% set ns = namespace(x=[]) %}{% for i in range(50000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ [ns.x] | join }}",
            "nested deeper than 128",
        ),
        (
            "a deeply nested list as JSON",
            "{% set ns = namespace(x=[]) %}{% for i in range(50000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x | tojson }}",
            "nested deeper than 128",
        ),
        (
            "a list doubled 64 times, printed",
            "{% set ns = namespace(d=[]) %}{% for i in range(64) %}{% set ns.d = [ns.d, ns.d] %}{% endfor %}{{ ns.d }}",
            "items to print",
        ),
        (
            "a mapping doubled 64 times, as a string",
            "{% set ns = namespace(d={}) %}{% for i in range(64) %}{% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}{{ ns.d | string }}",
            "items to print",
        ),
        (
            "a mapping doubled 64 times, as JSON",
            "{% set ns = namespace(d={}) %}{% for i in range(64) %}{% set ns.d = {'a': ns.d, 'b': ns.d} %}{% endfor %}{{ ns.d | tojson }}",
            "items to print",
        ),
        (
            "a huge JSON indent",
            "{{ [[[[1]]]] | tojson(indent=100000000) }}",
            "output cap",
        ),
        (
            "JSON indents past the output cap",
            "{{ range(100000) | list | tojson(indent=1000) }}",
            "output cap",
        ),
        (
            "two lists doubled 64 times, compared",
            &format!("{DOUBLED}{{{{ ns.a == ns.b }}}}"),
            "fuel",
        ),
        (
            "two lists doubled 64 times, ordered",
            &format!("{DOUBLED}{{{{ ns.a < ns.b }}}}"),
            "fuel",
        ),
        (
            "two lists doubled 64 times, in a chained comparison",
            &format!("{DOUBLED}{{{{ 1 < 2 < 3 and ns.a != ns.b != ns.a }}}}"),
            "fuel",
        ),
        (
            "a list doubled 64 times, looked for in another",
            &format!("{DOUBLED}{{{{ ns.a in [ns.b] }}}}"),
            "fuel",
        ),
        (
            "a list doubled 64 times, looked for in a string",
            &format!("{DOUBLED}{{{{ ns.a in 'abc' }}}}"),
            "items to print",
        ),
        (
            "a list doubled 64 times, ~-joined",
            &format!("{DOUBLED}{{{{ (ns.a ~ '') | length }}}}"),
            "items to print",
        ),
        (
            "a list doubled 64 times, as a mapping key",
            &format!("{DOUBLED}{{{{ {{ns.a: 1, ns.b: 2}} | length }}}}"),
            "fuel",
        ),
        (
            "a list doubled 64 times, compared by a test",
            &format!("{DOUBLED}{{{{ ns.a is eq(ns.b) }}}}"),
            "fuel",
        ),
        (
            "a list doubled 64 times, selected by a test",
            &format!("{DOUBLED}{{{{ [ns.a] | select('eq', ns.b) | list | length }}}}"),
            "fuel",
        ),
        (
            "a list doubled 64 times, mapped to lower case",
            &format!("{DOUBLED}{{{{ [ns.a] | map('lower') | list | length }}}}"),
            "items to print",
        ),
        (
            "lists doubled 64 times, deduplicated",
            &format!("{DOUBLED}{{{{ [ns.a, ns.b] | unique | length }}}}"),
            "fuel",
        ),
        (
            "a list doubled 64 times, lower-cased",
            &format!("{DOUBLED}{{{{ ns.a | lower }}}}"),
            "items to print",
        ),
        (
            "a list doubled 64 times, counted by a method",
            &format!("{DOUBLED}{{{{ [ns.a].count(ns.b) }}}}"),
            "items to print",
        ),
        (
            "a list doubled 64 times, string-joined by a method",
            &format!("{DOUBLED}{{{{ ''.join([ns.a]) }}}}"),
            "items to print",
        ),
        (
            "a list doubled 64 times, raised",
            &format!("{DOUBLED}{{{{ raise_exception(ns.a) }}}}"),
            "items to print",
        ),
        (
            "a list doubled 64 times, checked by loop.changed",
            &format!("{DOUBLED}{{% for i in range(3) %}}{{{{ loop.changed(ns.a if i % 2 else ns.b) }}}}{{% endfor %}}"),
            "fuel",
        ),
        (
            "a list doubled 64 times, printed by pprint",
            &format!("{DOUBLED}{{{{ ns.a | pprint }}}}"),
            "items to print",
        ),
        (
            "a list doubled 64 times, printed by debug",
            &format!("{DOUBLED}{{{{ debug() }}}}"),
            "items to print",
        ),
        (
            "two long strings compared over and over",
            "{% set a = 'x' * 7000000 %}{% set b = 'x' * 7000000 %}{% for i in range(100000) %}{% if a == b %}{% endif %}{% endfor %}",
            "fuel",
        ),
        (
            "a long string looked for in a list over and over",
            "{% set a = 'x' * 7000000 %}{% set b = ['x' * 7000000] * 10 %}{% for i in range(100000) %}{% if a in b %}{% endif %}{% endfor %}",
            "fuel",
        ),
        (
            "lazy repetitions compared",
            "{{ [[[1] * 10000] * 10000] == [[[1] * 10000] * 10000] }}",
            "fuel",
        ),
        (
            "a huge lazy list, 33 lists added to it",
            &format!(
                "{{% set n = 10000000 %}}{{{{ ([1] * n{}) | length }}}}",
                " + []".repeat(33)
            ),
            "fuel",
        ),
        (
            "a list doubled by 33 additions",
            "{% set ns = namespace(x=[1]) %}{% for i in range(33) %}{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x | length }}",
            "fuel",
        ),
        (
            "a list nested 60,000 deep",
            "{% set ns = namespace(x=[]) %}{% for i in range(60000) %}{% set ns.x = [ns.x] %}{% endfor %}ok",
            "nested deeper than 128",
        ),
        (
            "a mapping nested 60,000 deep",
            "{% set ns = namespace(x={}) %}{% for i in range(60000) %}{% set ns.x = {'a': ns.x} %}{% endfor %}ok",
            "nested deeper than 128",
        ),
        (
            "a list nested deeper in one tag",
            &format!(
                "{{% set ns = namespace(x=[]) %}}{{% for i in range(1000) %}}{{% set ns.x = {}ns.x{} %}}{{% endfor %}}ok",
                "[".repeat(20),
                "]".repeat(20)
            ),
            "nested deeper than 128",
        ),
        (
            "a namespace that holds itself, compared",
            "{% set a = namespace() %}{% set b = namespace() %}{% set a.x = [a] %}{% set b.x = [b] %}{{ a == b }}",
            "namespace may not hold a namespace",
        ),
        (
            "a chain of namespaces",
            "{% set h = namespace(n=namespace()) %}{% for i in range(60000) %}{% set n = namespace() %}{% set cur = h.n %}{% set cur.x = n %}{% set h.n = n %}{% endfor %}ok",
            "namespace may not hold a namespace",
        ),
        (
            "a chain of loop objects",
            "{% set ns = namespace(l=none) %}{% for i in range(60000) %}{% for j in [ns.l] %}{% set ns.l = loop %}{% endfor %}{% endfor %}ok",
            "namespace may not hold a loop",
        ),
    ];
    let mut failures = Vec::new();
    for &(name, source, why) in cases {
        let (result, time, memory) = measure(source);
        let ok = match &result {
            Err(ChatError::OverBudget(msg)) => msg.contains(why),
            _ => false,
        };
        if !ok || time > MAX_TIME || memory > MAX_MEMORY {
            let result = result.map(|s| format!("{} bytes rendered", s.len()));
            failures.push(format!(
                "{name}: {result:?} (wanted {why:?}) in {time:?}, {} MB",
                memory >> 20
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn templates_too_deep_to_parse_are_refused_before_parsing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // minijinja parses, compiles and drops each of these by recursing once per link, and
    // would fold the constant sum by materialising it, uncharged, as it compiles.
    let cases = [
        (
            "a long sum",
            format!("{{{{ 1{} }}}}", " + 1".repeat(100_000)),
            "tokens",
        ),
        (
            "a long `and`",
            format!("{{{{ true{} }}}}", " and true".repeat(100_000)),
            "tokens",
        ),
        (
            "many `not`",
            format!("{{{{ {}true }}}}", "not ".repeat(100_000)),
            "tokens",
        ),
        (
            "many `elif`",
            format!(
                "{{% if false %}}{}{{% endif %}}",
                "{% elif false %}".repeat(100_000)
            ),
            "nested deeper",
        ),
        (
            "a constant sum of lists",
            format!("{{{{ ([1] * 10**7{}) | length }}}}", " + []".repeat(33)),
            "constant list",
        ),
        (
            "constant lists compared",
            "{{ [1] * 10**8 == [1] * 10**8 }}".to_string(),
            "constant list",
        ),
    ];
    let mut failures = Vec::new();
    for (name, source, why) in cases {
        let start = cpu_time();
        let result = ChatTemplate::new(&source, Default::default());
        let time = cpu_time() - start;
        let ok = matches!(&result, Err(ChatError::OverBudget(msg)) if msg.contains(why));
        if !ok || time > MAX_TIME {
            failures.push(format!(
                "{name}: {:?} (wanted {why:?}) in {time:?}",
                result.err()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_output_cap_holds_and_the_error_names_the_template() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut template = ChatTemplate::new(
        "{% for m in messages %}{{ m.content }}{% endfor %}",
        Default::default(),
    )
    .unwrap();
    template.set_budget(Budget {
        max_output: 1000,
        ..Budget::default()
    });
    assert_eq!(
        template
            .render(&[Message::new("user", "a".repeat(1000))], false)
            .unwrap()
            .len(),
        1000
    );
    let err = template
        .render(&[Message::new("user", "a".repeat(1001))], false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the chat template was stopped: its output passed 1000 bytes; a template this costly \
         is broken or hostile"
    );
}

fn real_template(name: &str) -> ChatTemplate {
    let path = hearth_fixtures::fixtures_dir().join(format!("tokenizers/{name}.gguf.gz"));
    let bytes = hearth_fixtures::gunzip(&path);
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let tokenizer = Tokenizer::from_gguf(&header).unwrap();
    ChatTemplate::from_gguf(&header, &tokenizer).unwrap()
}

#[test]
fn real_templates_render_a_megabyte_conversation_with_a_third_of_the_budget() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Far more than any context holds: about 250,000 tokens.
    let mut messages = vec![Message::new("system", "You are helpful.")];
    for i in 0..1000 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(Message::new(role, "word ".repeat(200)));
    }
    for name in ["qwen3", "llama3", "llama2"] {
        let mut template = real_template(name);
        let full = template.render(&messages, true).unwrap();
        template.set_budget(Budget {
            fuel: Budget::default().fuel / 3,
            ..Budget::default()
        });
        assert_eq!(template.render(&messages, true).unwrap(), full, "{name}");
    }
}
