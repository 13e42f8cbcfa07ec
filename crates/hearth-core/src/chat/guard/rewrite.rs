//! The rewriting of compiled instructions (see the module comment of [`super`]): what each
//! instruction becomes, and what is known about its operands, since an operand that is surely
//! a string or a number needs no check.

use std::collections::HashSet;

use minijinja::machinery::{Instruction, Instructions};
use minijinja::Value;

use super::hook::{filter_kind, test_hook, Cmp, Hook};
use crate::chat::budget::is_container;

/// The instructions that jump, as a pattern that binds `$target` to where they jump to.
macro_rules! jump {
    ($target:ident) => {
        Instruction::Jump($target)
            | Instruction::JumpIfFalse($target)
            | Instruction::JumpIfFalseOrPop($target)
            | Instruction::JumpIfTrueOrPop($target)
            | Instruction::Iterate($target)
            | Instruction::BuildMacro(_, $target, _)
    };
}

/// Rewrites instructions as the module comment of [`super`] says, keeping their source
/// locations and moving jump targets to the first instruction that replaces their target.
pub(super) fn rewrite<'s>(old: &Instructions<'s>) -> Instructions<'s> {
    let code = Code::new(old);
    let mut new = Instructions::new(old.name(), old.source());
    let mut starts = Vec::with_capacity(code.instrs.len() + 1);
    let mut next = 0u32;
    for (idx, instr) in code.instrs.iter().enumerate() {
        starts.push(next);
        let span = old.get_span(idx as u32);
        let line = old.get_line(idx as u32);
        let loop_target = code.is_loop_target(idx);
        for instr in expand(instr, |depth| loop_target || code.is_scalar(idx, depth)) {
            next = match (span, line) {
                (Some(span), _) => new.add_with_span(instr, span),
                (None, Some(line)) => new.add_with_line(instr, line as u16),
                (None, None) => new.add(instr),
            } + 1;
        }
    }
    starts.push(next);
    let moved = |target: &mut u32| {
        if let Some(&start) = starts.get(*target as usize) {
            *target = start;
        }
    };
    for idx in 0..next {
        if let Some(jump!(target)) = new.get_mut(idx) {
            moved(target);
        }
    }
    new
}

/// Instructions as compiled, with what is known about their operands: most of a real
/// template's operands are strings and numbers, which need no check.
struct Code<'a, 's> {
    instrs: Vec<&'a Instruction<'s>>,
    /// Instructions a jump may land on: what was on the stack there is not known.
    targets: HashSet<usize>,
}

impl<'a, 's> Code<'a, 's> {
    fn new(old: &'a Instructions<'s>) -> Self {
        let instrs: Vec<_> = (0..).map_while(|idx| old.get(idx)).collect();
        let targets = instrs
            .iter()
            .filter_map(|instr| match instr {
                jump!(target) => Some(*target as usize),
                _ => None,
            })
            .collect();
        Code { instrs, targets }
    }

    /// The instruction that pushed the value `depth` places below the top of the stack as
    /// instruction `at` starts, where it is in the same run of instructions without jumps.
    fn producer(&self, at: usize, depth: usize) -> Option<usize> {
        let mut depth = depth;
        for idx in (0..at).rev() {
            if self.targets.contains(&(idx + 1)) {
                return None;
            }
            let pops = pops(self.instrs[idx])?;
            if depth == 0 {
                return Some(idx);
            }
            depth = depth - 1 + pops;
        }
        None
    }

    /// Whether instruction `at` stores the item of a loop (or a part of it) in the loop's
    /// variable: a loop's variables are set afresh at each item, so what they hold was
    /// stored already or made in the tag of the `for`.
    fn is_loop_target(&self, at: usize) -> bool {
        let mut idx = at;
        while idx > 0 && matches!(self.instrs[idx], Instruction::StoreLocal(_)) {
            idx -= 1;
            match self.instrs[idx] {
                Instruction::Iterate(_) => return true,
                Instruction::UnpackList(_) => {
                    return idx > 0 && matches!(self.instrs[idx - 1], Instruction::Iterate(_))
                }
                _ => {}
            }
        }
        false
    }

    /// Whether the value `depth` places below the top as instruction `at` starts is surely not
    /// a list or mapping (or an error is raised before it is used).
    fn is_scalar(&self, at: usize, depth: usize) -> bool {
        let Some(idx) = self.producer(at, depth) else {
            return false;
        };
        use Instruction as I;
        match self.instrs[idx] {
            // A long constant string costs to compare: its checks charge it.
            I::LoadConst(value) => {
                !is_container(value) && value.as_str().is_none_or(|s| s.len() <= 256)
            }
            I::Sub | I::Div | I::IntDiv | I::Rem | I::Pow | I::Neg | I::Not => true,
            I::Eq | I::Ne | I::Lt | I::Lte | I::Gt | I::Gte | I::In => true,
            I::StringConcat | I::EndCapture | I::PerformTest(..) => true,
            I::IsUndefined => true,
            // A string or a number plus anything is a string or a number, or an error.
            I::Add => self.is_scalar(idx, 0) || self.is_scalar(idx, 1),
            I::Mul => self.is_scalar(idx, 0) && self.is_scalar(idx, 1),
            I::ApplyFilter(name, ..) => SCALAR_FILTERS.contains(&normalized(name).as_str()),
            I::CallMethod(name, _) => SCALAR_METHODS.contains(name),
            _ => false,
        }
    }
}

/// Filters that return a string, a number or a boolean.
const SCALAR_FILTERS: [&str; 27] = [
    "length",
    "count",
    "trim",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "string",
    "tojson",
    "join",
    "indent",
    "format",
    "safe",
    "escape",
    "e",
    "int",
    "float",
    "round",
    "abs",
    "bool",
    "wordcount",
    "truncate",
    "center",
    "striptags",
    "urlencode",
    "pprint",
];

/// pycompat's string methods that return a string, a number or a boolean.
const SCALAR_METHODS: [&str; 22] = [
    "strip",
    "lstrip",
    "rstrip",
    "lower",
    "upper",
    "title",
    "capitalize",
    "replace",
    "format",
    "join",
    "startswith",
    "endswith",
    "isalnum",
    "isalpha",
    "isascii",
    "isdigit",
    "islower",
    "isnumeric",
    "isspace",
    "isupper",
    "find",
    "rfind",
];

/// How many values an instruction that pushes one value pops; `None` for the others.
fn pops(instr: &Instruction<'_>) -> Option<usize> {
    use Instruction as I;
    Some(match instr {
        I::LoadConst(_) | I::Lookup(_) | I::EndCapture | I::GetClosure => 0,
        I::GetAttr(_) | I::Not | I::Neg | I::IsUndefined => 1,
        I::GetItem
        | I::Add
        | I::Sub
        | I::Mul
        | I::Div
        | I::IntDiv
        | I::Rem
        | I::Pow
        | I::Eq
        | I::Ne
        | I::Lt
        | I::Lte
        | I::Gt
        | I::Gte
        | I::StringConcat
        | I::In => 2,
        I::Slice => 4,
        I::BuildList(Some(n)) | I::BuildTuple(Some(n)) | I::MergeKwargs(n) => *n,
        I::BuildMap(n) | I::BuildKwargs(n) => 2 * n,
        I::ApplyFilter(_, Some(n), _)
        | I::PerformTest(_, Some(n), _)
        | I::CallMethod(_, Some(n))
        | I::CallObject(Some(n)) => *n as usize,
        // `loop(...)` and `super()` jump elsewhere.
        I::CallFunction(name, Some(n)) if *name != "loop" && *name != "super" => *n as usize,
        _ => return None,
    })
}

/// Filter and test names as minijinja looks them up: without whitespace.
fn normalized(name: &str) -> String {
    name.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

/// What one instruction becomes; `scalar(depth)` tells whether the operand `depth` places
/// below the top of the stack is surely a string, number or the like, which needs no check.
fn expand<'s>(instr: &Instruction<'s>, scalar: impl Fn(usize) -> bool) -> Vec<Instruction<'s>> {
    use Instruction as I;
    let call = |hook: Hook, args: u16| I::CallFunction(hook.name(), Some(args));
    // A hook on the value at the top of the stack, which stays there.
    let on_top = |hook: Hook| vec![I::DupTop, call(hook, 1), I::DiscardTop, instr.clone()];
    // A hook that receives the operands and gives them back.
    let on_operands = |hook: Hook, args: Option<u16>| {
        let mut v = vec![I::CallFunction(hook.name(), args), I::UnpackLists(1)];
        if args.is_some() {
            // UnpackLists leaves the count, which only a call of unknown arity wants.
            v.push(I::DiscardTop);
        }
        v.push(instr.clone());
        v
    };
    match instr {
        // Raw text is written through the formatter too, which counts the output.
        I::EmitRaw(text) => vec![
            I::LoadConst(Value::from_safe_string(text.to_string())),
            I::Emit,
        ],
        I::Eq => vec![call(Hook::Compare(Cmp::Eq), 2)],
        I::Ne => vec![call(Hook::Compare(Cmp::Ne), 2)],
        I::Lt => vec![call(Hook::Compare(Cmp::Lt), 2)],
        I::Lte => vec![call(Hook::Compare(Cmp::Lte), 2)],
        I::Gt => vec![call(Hook::Compare(Cmp::Gt), 2)],
        I::Gte => vec![call(Hook::Compare(Cmp::Gte), 2)],
        I::In => vec![call(Hook::In, 2)],
        I::StringConcat => vec![call(Hook::Concat, 2)],
        // A chained comparison (`a < b < c`), with any operator: checked for both.
        I::CompareAndPreserve(_) if !scalar(1) => on_operands(Hook::CompareOperands, Some(2)),
        // Only two sequences may be materialised.
        I::Add if !scalar(0) && !scalar(1) => on_operands(Hook::Add, Some(2)),
        I::GetItem if !scalar(0) => on_top(Hook::Key),
        I::BuildMap(pairs) if !(0..*pairs).all(|pair| scalar(2 * pair + 1)) => {
            match u16::try_from(pairs * 2) {
                Ok(n) => on_operands(Hook::MapKeys, Some(n)),
                Err(_) => vec![instr.clone()],
            }
        }
        I::MergeKwargs(maps) => match u16::try_from(*maps) {
            Ok(n) => on_operands(Hook::KwargsKeys, Some(n)),
            Err(_) => vec![instr.clone()],
        },
        I::SetAttr(_) if !scalar(1) => on_operands(Hook::SetAttr, Some(2)),
        I::StoreLocal(_) if !scalar(0) => on_operands(Hook::Store, Some(1)),
        I::ApplyFilter(name, args, _) => match filter_kind(&normalized(name)) {
            Some(_) if args.is_some_and(|n| (0..n as usize).all(&scalar)) => vec![instr.clone()],
            Some(kind) => on_operands(Hook::Filter(kind), *args),
            None => vec![instr.clone()],
        },
        I::PerformTest(name, args, _) => match test_hook(&normalized(name)) {
            // The value tested is the deepest argument.
            Some(_) if args.is_some_and(|n| n > 0 && scalar(n as usize - 1)) => {
                vec![instr.clone()]
            }
            Some(hook) => on_operands(hook, *args),
            None => vec![instr.clone()],
        },
        I::CallMethod("changed", args) => on_operands(Hook::Changed, *args),
        other => vec![other.clone()],
    }
}
