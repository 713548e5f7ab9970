//! Pebble-style templates, as Kestra flows write them, on minijinja with jaq for `jq`.
//!
//! This module owns everything about rendering `{{ … }}` expressions in flow properties:
//!
//! - [`Templates`]: one minijinja environment configured for Kestra/Pebble compatibility
//!   (strict undefined, no auto-escaping, maps and lists printed as compact JSON, booleans as
//!   `true`/`false`, null as empty text), plus a cache of compiled templates keyed by their
//!   source text, so a template is parsed once however many executions render it.
//! - swoop's filters (`jq`, `toJson`/`json`, `fromJson`, `keys`, `values`, `number`, `date`,
//!   `slugify`, `base64encode`/`base64decode`, `urlencode`, Pebble's `default` and `replace`, …)
//!   and functions (`secret`, `now`, `uuid`, `fromJson`/`json`, and the internal-storage ones:
//!   `read`, `fromIon`, `fileSize`, `fileExists`, `isFileEmpty`, which reach the files of the
//!   execution being rendered through [`with_files`]).
//! - [`Templates::render_typed`]: a string that is one `{{ expression }}` renders to the
//!   expression's own value (a number, a list, a map), not to its text.
//! - [`check_syntax`], used by flow validation to reject broken templates before a flow is saved.
//! - [`mask_secrets`]: every value `secret()` ever returned in this process is remembered so that
//!   logs and outputs can be scrubbed.
//!
//! `jq` programs run on jaq (jaq-core + jaq-std + jaq-json). They are compiled once per thread and
//! filter text (jaq filters hold `Rc`s), and always yield a list of results, as in Kestra.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chrono::{
    DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc,
};
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value};
use parking_lot::RwLock;

/// Compiled templates kept before the cache is emptied and starts over.
const MAX_CACHED_TEMPLATES: usize = 10_000;
/// Compiled jq programs kept per thread before that cache is emptied.
const MAX_CACHED_JQ: usize = 1_000;
/// A jq program yielding more results than this is stopped (protects against `repeat`, `range(1e9)`).
const MAX_JQ_RESULTS: usize = 100_000;
/// What a secret value is replaced with by [`mask_secrets`].
const MASK: &str = "******";
/// Longest template text quoted by [`RenderError`]'s `Display`.
const MAX_QUOTED_EXPRESSION: usize = 300;

/// The most bytes `read()` returns; bigger files are for tasks to stream.
pub const MAX_READ_BYTES: u64 = 10 * 1024 * 1024;

/// What the file functions (`read`, `fileSize` …) reach while a task of one execution renders.
/// The engine hands over the execution's files (`storage::ExecutionFiles`), which refuse the
/// files of other executions.
pub trait FileAccess: Send + Sync {
    /// The whole file (at most [`MAX_READ_BYTES`]).
    fn read(&self, uri: &str) -> Result<Vec<u8>, String>;
    /// The file's size, `None` when there is no such file.
    fn size(&self, uri: &str) -> Result<Option<u64>, String>;
}

thread_local! {
    static FILES: RefCell<Option<Arc<dyn FileAccess>>> = const { RefCell::new(None) };
}

/// Runs `f` (which renders) with `files` reachable by the file functions. Rendering is
/// synchronous, so a thread-local set for the call's duration is exact.
pub fn with_files<R>(files: Option<Arc<dyn FileAccess>>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn FileAccess>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            FILES.with(|cell| *cell.borrow_mut() = previous);
        }
    }
    let previous = FILES.with(|cell| std::mem::replace(&mut *cell.borrow_mut(), files));
    let _restore = Restore(previous);
    f()
}

fn current_files() -> Result<Arc<dyn FileAccess>, Error> {
    FILES
        .with(|cell| cell.borrow().clone())
        .ok_or_else(|| invalid("file functions are only available while a task runs"))
}

/// The variables templates render against, converted for minijinja once. Build it once per
/// execution and add each task run's own variables with [`TemplateContext::with`], which
/// shares the converted values (minijinja's are reference counted) instead of copying and
/// converting the whole context for every task run.
#[derive(Clone, Debug, Default)]
pub struct TemplateContext {
    /// The top-level variables, in order.
    entries: Vec<(Value, Value)>,
    /// `entries` as one minijinja map, made at the first render.
    value: OnceLock<Value>,
}

impl TemplateContext {
    /// The variables of a JSON value: an object's entries; anything else has none.
    pub fn from_json(context: &serde_json::Value) -> Self {
        let mut ctx = Self::default();
        if let serde_json::Value::Object(map) = context {
            for (key, value) in map {
                ctx.insert(key, value);
            }
        }
        ctx
    }

    /// Sets the variable `key` (replacing one of the same name).
    pub fn insert<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        self.insert_value(key, to_value(value));
    }

    /// Sets the variable `key` to a shared JSON object, converted for minijinja lazily: each of
    /// its entries at its first use. For the trigger's variables, a realtime event's payload,
    /// which a task often reads one field of, or none.
    pub fn insert_shared_map(
        &mut self,
        key: &str,
        map: &Arc<serde_json::Map<String, serde_json::Value>>,
    ) {
        let converted = (0..map.len()).map(|_| OnceLock::new()).collect();
        let lazy = LazyJsonMap {
            map: map.clone(),
            converted,
        };
        self.insert_value(key, Value::from_object(lazy));
    }

    fn insert_value(&mut self, key: &str, value: Value) {
        match self
            .entries
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(key))
        {
            Some(slot) => slot.1 = value,
            None => self.entries.push((Value::from(key), value)),
        }
        self.value = OnceLock::new();
    }

    /// This context with `extra` variables set.
    pub fn with<'k>(&self, extra: impl IntoIterator<Item = (&'k str, serde_json::Value)>) -> Self {
        let mut ctx = Self {
            entries: self.entries.clone(),
            value: OnceLock::new(),
        };
        for (key, value) in extra {
            ctx.insert(key, &value);
        }
        ctx
    }

    fn value(&self) -> &Value {
        self.value
            .get_or_init(|| Value::from_object(Variables(self.entries.clone())))
    }
}

/// A context's top level as minijinja sees it: a map of a few entries, searched in order.
#[derive(Debug)]
struct Variables(Vec<(Value, Value)>);

impl minijinja::value::Object for Variables {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        use minijinja::value::ObjectExt;
        self.mapped_enumerator(|this| Box::new(this.0.iter().map(|(k, _)| k.clone())))
    }
}

/// A JSON object as minijinja sees it, without converting it up front: an entry is converted
/// at its first lookup and kept for the next ones.
#[derive(Debug)]
struct LazyJsonMap {
    map: Arc<serde_json::Map<String, serde_json::Value>>,
    /// One slot per entry of `map`, in its order.
    converted: Vec<OnceLock<Value>>,
}

impl minijinja::value::Object for LazyJsonMap {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        let (index, (_, value)) = self.map.iter().enumerate().find(|(_, (k, _))| *k == key)?;
        let slot = self.converted.get(index)?;
        Some(slot.get_or_init(|| to_value(value)).clone())
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        use minijinja::value::ObjectExt;
        self.mapped_enumerator(|this| Box::new(this.map.keys().map(|k| Value::from(k.as_str()))))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.map.len())
    }
}

/// A context given as JSON is converted on first use, so a value with nothing to render never
/// converts it; a [`TemplateContext`] is ready.
enum Ctx<'a> {
    Json(&'a serde_json::Value, Option<Value>),
    Ready(&'a Value),
}

impl Ctx<'_> {
    fn get(&mut self) -> &Value {
        match self {
            Ctx::Json(json, converted) => converted.get_or_insert_with(|| to_value(*json)),
            Ctx::Ready(value) => value,
        }
    }
}

/// What one task run renders against: its template variables and its execution's files. Built
/// once per task run (the engine's and the tests' `RunContext`s hold one), so a render costs no
/// allocation for the file access.
pub struct TaskTemplates {
    context: TemplateContext,
    files: Arc<dyn FileAccess>,
}

impl TaskTemplates {
    pub fn new(context: serde_json::Value, files: Arc<dyn FileAccess>) -> Self {
        Self::prepared(TemplateContext::from_json(&context), files)
    }

    pub fn prepared(context: TemplateContext, files: Arc<dyn FileAccess>) -> Self {
        Self { context, files }
    }

    fn with<R>(&self, f: impl FnOnce(&Templates, &TemplateContext) -> R) -> R {
        with_files(Some(self.files.clone()), || {
            f(Templates::global(), &self.context)
        })
    }

    pub fn render(&self, template: &str) -> Result<String, RenderError> {
        self.with(|t, ctx| t.render_in(template, ctx))
    }

    pub fn render_value(
        &self,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, RenderError> {
        self.with(|t, ctx| t.render_value_in(value, ctx))
    }

    pub fn render_typed(
        &self,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, RenderError> {
        self.with(|t, ctx| t.render_typed_in(value, ctx))
    }
}

/// Compiled-template cache + minijinja environment with swoop's filters and functions.
pub struct Templates {
    inner: RwLock<Inner>,
}

struct Inner {
    env: Environment<'static>,
    /// Templates added to `env` since it was last emptied.
    cached: usize,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("cached", &self.inner.read().cached)
            .finish()
    }
}

impl Templates {
    pub fn new() -> Self {
        Self {
            inner: RwLock::new(Inner {
                env: build_environment(),
                cached: 0,
            }),
        }
    }

    /// A process-wide shared instance.
    pub fn global() -> &'static Templates {
        static GLOBAL: OnceLock<Templates> = OnceLock::new();
        GLOBAL.get_or_init(Templates::new)
    }

    /// Renders `template` with `context` (a JSON object: flow, execution, inputs, vars, trigger, outputs, taskrun, labels …).
    /// Strings without `{{`, `{%` or `{#` are returned as is without touching minijinja (fast path).
    pub fn render(
        &self,
        template: &str,
        context: &serde_json::Value,
    ) -> Result<String, RenderError> {
        self.render_str(template, &mut Ctx::Json(context, None))
    }

    /// [`Templates::render`] against a prepared context.
    pub fn render_in(
        &self,
        template: &str,
        context: &TemplateContext,
    ) -> Result<String, RenderError> {
        self.render_str(template, &mut Ctx::Ready(context.value()))
    }

    /// Renders every string inside `value` (maps and lists recursively; keys untouched); non-strings unchanged.
    pub fn render_value(
        &self,
        value: &serde_json::Value,
        context: &serde_json::Value,
    ) -> Result<serde_json::Value, RenderError> {
        self.render_value_with(value, &mut Ctx::Json(context, None))
    }

    /// [`Templates::render_value`] against a prepared context.
    pub fn render_value_in(
        &self,
        value: &serde_json::Value,
        context: &TemplateContext,
    ) -> Result<serde_json::Value, RenderError> {
        self.render_value_with(value, &mut Ctx::Ready(context.value()))
    }

    /// Like [`Templates::render_value`], but a string that is exactly one `{{ expression }}`
    /// becomes the expression's value with its type (`"{{ inputs.n }}"` → `5`,
    /// `"{{ outputs.q.rows }}"` → a list), as Kestra's typed properties read them.
    pub fn render_typed(
        &self,
        value: &serde_json::Value,
        context: &serde_json::Value,
    ) -> Result<serde_json::Value, RenderError> {
        self.render_typed_with(value, &mut Ctx::Json(context, None))
    }

    /// [`Templates::render_typed`] against a prepared context.
    pub fn render_typed_in(
        &self,
        value: &serde_json::Value,
        context: &TemplateContext,
    ) -> Result<serde_json::Value, RenderError> {
        self.render_typed_with(value, &mut Ctx::Ready(context.value()))
    }

    fn render_str(&self, template: &str, ctx: &mut Ctx) -> Result<String, RenderError> {
        if !is_template(template) {
            return Ok(template.to_owned());
        }
        self.render_with(template, ctx.get())
    }

    fn render_typed_with(
        &self,
        value: &serde_json::Value,
        ctx: &mut Ctx,
    ) -> Result<serde_json::Value, RenderError> {
        use serde_json::Value as J;
        match value {
            J::String(s) => match single_expression(s) {
                Some(expr) => {
                    let json = self
                        .render_with(&format!("{{{{ ({expr}) | toJson }}}}"), ctx.get())
                        .map_err(|e| RenderError {
                            expression: s.clone(),
                            message: e.message,
                        })?;
                    serde_json::from_str(&json).map_err(|e| RenderError {
                        expression: s.clone(),
                        message: format!("the value is not JSON: {e}"),
                    })
                }
                None => self.render_str(s, ctx).map(J::String),
            },
            J::Array(items) => items
                .iter()
                .map(|item| self.render_typed_with(item, ctx))
                .collect::<Result<_, _>>()
                .map(J::Array),
            J::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (key, item) in map {
                    out.insert(key.clone(), self.render_typed_with(item, ctx)?);
                }
                Ok(J::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    fn render_value_with(
        &self,
        value: &serde_json::Value,
        ctx: &mut Ctx,
    ) -> Result<serde_json::Value, RenderError> {
        use serde_json::Value as J;
        Ok(match value {
            J::String(s) if is_template(s) => J::String(self.render_with(s, ctx.get())?),
            J::Array(items) => J::Array(
                items
                    .iter()
                    .map(|item| self.render_value_with(item, ctx))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(map) => {
                let mut out = serde_json::Map::with_capacity(map.len());
                for (key, item) in map {
                    out.insert(key.clone(), self.render_value_with(item, ctx)?);
                }
                J::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Renders a template known to contain template syntax, compiling and caching it if needed.
    fn render_with(&self, template: &str, ctx: &Value) -> Result<String, RenderError> {
        let error = |err: Error| RenderError {
            expression: template.to_owned(),
            message: describe_error(&err, template),
        };
        {
            let inner = self.inner.read();
            if let Ok(compiled) = inner.env.get_template(template) {
                return compiled.render(ctx).map_err(error);
            }
        }
        {
            let mut inner = self.inner.write();
            // Another thread may have compiled it while we waited for the lock.
            if inner.env.get_template(template).is_err() {
                if inner.cached >= MAX_CACHED_TEMPLATES {
                    inner.env.clear_templates();
                    inner.cached = 0;
                }
                inner
                    .env
                    .add_template_owned(template.to_owned(), template.to_owned())
                    .map_err(error)?;
                inner.cached += 1;
            }
        }
        let inner = self.inner.read();
        let compiled = inner.env.get_template(template).map_err(error)?;
        compiled.render(ctx).map_err(error)
    }
}

/// Checks a template's syntax without rendering (used by flow validation). Err carries minijinja's message, including the line within the template when > 1.
pub fn check_syntax(template: &str) -> Result<(), String> {
    if !is_template(template) {
        return Ok(());
    }
    let mut env = Environment::empty();
    env.set_syntax(syntax_config());
    env.template_from_str(template)
        .map(|_| ())
        .map_err(|err| describe_error(&err, template))
}

/// Replaces every secret value ever returned by `secret()` in this process with `******`.
pub fn mask_secrets(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read();
    if !secrets.iter().any(|secret| text.contains(secret.as_str())) {
        return Cow::Borrowed(text);
    }
    // Longest first, so a secret containing another one is masked whole.
    let mut masked = text.to_owned();
    for secret in secrets.iter() {
        if masked.contains(secret.as_str()) {
            masked = masked.replace(secret.as_str(), MASK);
        }
    }
    Cow::Owned(masked)
}

/// A template that could not be compiled or rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderError {
    /// The template text.
    pub expression: String,
    /// What went wrong, without the template text.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let expression = self.expression.as_str();
        match expression.char_indices().nth(MAX_QUOTED_EXPRESSION) {
            Some((cut, _)) => write!(
                f,
                "cannot render `{}…`: {}",
                &expression[..cut],
                self.message
            ),
            None => write!(f, "cannot render `{expression}`: {}", self.message),
        }
    }
}

impl std::error::Error for RenderError {}

// ---------------------------------------------------------------------------------------------
// Environment

/// The expression of a string that is exactly one `{{ … }}` and nothing else.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

/// Whether `text` contains template syntax at all.
fn is_template(text: &str) -> bool {
    text.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'{' && matches!(w[1], b'{' | b'%' | b'#'))
}

fn syntax_config() -> minijinja::syntax::SyntaxConfig {
    minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .expect("default delimiters are valid")
}

fn build_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(syntax_config());
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_formatter(format_value);
    // Debug mode makes undefined values remember where they came from, so that errors say
    // "`trigger.nope` is undefined". It costs nothing on renders that succeed without creating
    // undefined values; errors snapshot the variables they reference.
    env.set_debug(true);

    // Pebble spells it `null`.
    env.add_global("null", Value::from(()));

    env.add_filter("jq", jq_filter);
    env.add_filter("toJson", to_json);
    env.add_filter("json", to_json);
    env.add_filter("fromJson", from_json);
    env.add_filter("keys", keys);
    env.add_filter("values", values);
    env.add_filter("number", number);
    env.add_filter("date", date);
    env.add_filter("slugify", slugify);
    env.add_filter("base64encode", base64_encode);
    env.add_filter("base64decode", base64_decode);
    env.add_filter("urlencode", urlencode);
    env.add_filter("default", pebble_default);
    env.add_filter("d", pebble_default);
    env.add_filter("replace", replace);
    env.add_filter("substringBefore", |s: &str, sep: &str| {
        s.find(sep).map_or(s, |i| &s[..i]).to_owned()
    });
    env.add_filter("substringAfter", |s: &str, sep: &str| {
        s.find(sep).map_or("", |i| &s[i + sep.len()..]).to_owned()
    });
    env.add_filter("substringBeforeLast", |s: &str, sep: &str| {
        s.rfind(sep).map_or(s, |i| &s[..i]).to_owned()
    });
    env.add_filter("substringAfterLast", |s: &str, sep: &str| {
        s.rfind(sep).map_or("", |i| &s[i + sep.len()..]).to_owned()
    });

    env.add_test("empty", |value: &Value| is_empty_value(value));
    env.add_test("null", |value: &Value| {
        value.is_none() || value.is_undefined()
    });

    env.add_function("secret", secret);
    env.add_function("now", now);
    env.add_function("uuid", || uuid::Uuid::new_v4().to_string());
    env.add_function("fromJson", from_json);
    env.add_function("json", from_json);

    env.add_function("read", read_file);
    env.add_function("fileSize", file_size);
    env.add_function("fileExists", file_exists);
    env.add_function("isFileEmpty", is_file_empty);
    env.add_function("fromIon", from_ion);
    env.add_filter("fromIon", from_ion);
    env
}

// ---------------------------------------------------------------------------------------------
// Internal-storage functions

/// `read(uri)`: a file of this execution as UTF-8 text.
fn read_file(uri: &str) -> Result<String, Error> {
    let bytes = current_files()?.read(uri).map_err(invalid)?;
    String::from_utf8(bytes).map_err(|_| invalid(format!("{uri} is not UTF-8 text")))
}

fn file_size(uri: &str) -> Result<u64, Error> {
    current_files()?
        .size(uri)
        .map_err(invalid)?
        .ok_or_else(|| invalid(format!("no file at {uri}")))
}

fn file_exists(uri: &str) -> Result<bool, Error> {
    Ok(current_files()?.size(uri).map_err(invalid)?.is_some())
}

fn is_file_empty(uri: &str) -> Result<bool, Error> {
    Ok(file_size(uri)? == 0)
}

/// `fromIon(text, allRows=false)`: the first Ion value of `text`, or a list of all of them.
fn from_ion(state: &State, text: &Value, all_rows: Option<bool>) -> Result<Value, Error> {
    let text = defined(state, text)?
        .as_str()
        .ok_or_else(|| invalid("fromIon expects Ion text (e.g. `read(outputs.q.uri)`)"))?;
    let rows = crate::ion::from_text(text).map_err(|e| invalid(e.to_string()))?;
    if all_rows.unwrap_or(false) {
        Ok(to_value(&rows))
    } else {
        Ok(rows
            .into_iter()
            .next()
            .map_or(Value::from(()), |v| to_value(&v)))
    }
}

/// Pebble/Kestra printing: strings raw, maps and lists as compact JSON, null as nothing.
fn format_value(out: &mut Output, _state: &mut State, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => Ok(()),
        ValueKind::Bool => Ok(out.write_str(if value.is_true() { "true" } else { "false" })?),
        ValueKind::String => Ok(out.write_str(value.as_str().unwrap_or_default())?),
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {
            Ok(out.write_str(&json_text(value)?)?)
        }
        _ => Ok(write!(out, "{value}")?),
    }
}

/// minijinja's message for `err`, with its kind, its line when past the first, and its causes.
/// `source` is the template text, to quote the failing expression when minijinja gives no detail.
fn describe_error(err: &Error, source: &str) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    } else if let Some(expression) = err.range().and_then(|range| source.get(range)) {
        let _ = write!(message, " `{expression}`");
    }
    if let Some(line) = err.line()
        && line > 1
    {
        let _ = write!(message, " (line {line})");
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

/// A JSON (or any serializable) value as a template value.
fn to_value<T: serde::Serialize + ?Sized>(value: &T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

fn invalid(message: impl Into<Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// Strict undefined for swoop's own filters (minijinja hands `&Value` arguments over as they
/// are). `StringInput::new` applies the environment's undefined behaviour and, in strict mode,
/// fails with minijinja's own error naming the undefined expression.
fn defined<'v>(state: &State, value: &'v Value) -> Result<&'v Value, Error> {
    if value.is_undefined() {
        minijinja::value::StringInput::new(state, value)?;
    }
    Ok(value)
}

/// Pebble's `empty` test: null, blank text, empty list or map.
fn is_empty_value(value: &Value) -> bool {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => true,
        ValueKind::String => value.as_str().is_some_and(|s| s.trim().is_empty()),
        ValueKind::Seq | ValueKind::Map => value.len() == Some(0),
        _ => false,
    }
}

fn json_text(value: &Value) -> Result<String, Error> {
    serde_json::to_string(value)
        .map_err(|err| invalid(format!("cannot serialize value to JSON: {err}")))
}

// ---------------------------------------------------------------------------------------------
// Filters

/// `toJson` / `json`: the value as compact JSON text.
fn to_json(state: &State, value: &Value) -> Result<String, Error> {
    json_text(defined(state, value)?)
}

/// `fromJson` (filter and function) / `json(text)` (function): JSON text to a value.
/// Values that are already maps or lists pass through.
fn from_json(state: &State, value: &Value) -> Result<Value, Error> {
    match defined(state, value)?.as_str() {
        Some(text) => serde_json::from_str::<serde_json::Value>(text)
            .map(|json| to_value(&json))
            .map_err(|err| invalid(format!("invalid JSON: {err}"))),
        None if matches!(value.kind(), ValueKind::Map | ValueKind::Seq) => Ok(value.clone()),
        None => Err(invalid(format!(
            "fromJson expects JSON text, got {}",
            value.kind()
        ))),
    }
}

/// Pebble's `default`: the fallback when the value is undefined, null, blank text or an empty
/// list/map (minijinja's only covers undefined).
fn pebble_default(value: &Value, fallback: Option<Value>) -> Value {
    if is_empty_value(value) {
        fallback.unwrap_or_else(|| Value::from(""))
    } else {
        value.clone()
    }
}

/// `replace(from, to)` as in Jinja, or Pebble's `replace({'from': 'to', …})`.
fn replace(
    state: &State,
    value: &Value,
    from: &Value,
    to: Option<&Value>,
) -> Result<String, Error> {
    let text = match defined(state, value)?.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(value.to_string()),
    };
    match (from.kind(), to) {
        (ValueKind::Map, None) => {
            let mut out = text.into_owned();
            for key in from.try_iter()? {
                let replacement = from.get_item(&key)?;
                out = out.replace(&key.to_string(), &replacement.to_string());
            }
            Ok(out)
        }
        (_, Some(to)) => Ok(text.replace(
            &defined(state, from)?.to_string(),
            &defined(state, to)?.to_string(),
        )),
        (_, None) => Err(invalid(
            "replace expects (from, to) or a map of replacements",
        )),
    }
}

/// `keys`: the keys of a map, in order.
fn keys(state: &State, value: &Value) -> Result<Value, Error> {
    if defined(state, value)?.kind() != ValueKind::Map {
        return Err(invalid(format!("keys expects a map, got {}", value.kind())));
    }
    Ok(Value::from(value.try_iter()?.collect::<Vec<_>>()))
}

/// `values`: the values of a map, in key order.
fn values(state: &State, value: &Value) -> Result<Value, Error> {
    if defined(state, value)?.kind() != ValueKind::Map {
        return Err(invalid(format!(
            "values expects a map, got {}",
            value.kind()
        )));
    }
    let values = value
        .try_iter()?
        .map(|key| value.get_item(&key))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Value::from(values))
}

/// `number(type?)`: text to a number. Without a type, integers stay integers, anything else
/// parses as a float. Types as Kestra spells them: INT, LONG, BIGINTEGER, FLOAT, DOUBLE, BIGDECIMAL.
fn number(state: &State, value: &Value, kind: Option<&str>) -> Result<Value, Error> {
    let text = match defined(state, value)?.kind() {
        ValueKind::Number => value.to_string(),
        ValueKind::String => value.as_str().unwrap_or_default().trim().to_owned(),
        other => return Err(invalid(format!("number expects text, got {other}"))),
    };
    let not_a_number = || invalid(format!("cannot convert `{text}` to a number"));
    let as_int = || {
        text.parse::<i64>()
            .map(Value::from)
            .map_err(|_| not_a_number())
    };
    let as_float = || {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from)
            .ok_or_else(not_a_number)
    };
    match kind.map(str::to_ascii_uppercase).as_deref() {
        None => as_int().or_else(|_| as_float()),
        Some("INT" | "INTEGER" | "LONG" | "BIGINTEGER") => as_int(),
        Some("FLOAT" | "DOUBLE" | "BIGDECIMAL") => as_float(),
        Some(other) => Err(invalid(format!("unknown number type `{other}`"))),
    }
}

/// `slugify`: lower-case ASCII words joined by `-` (common Latin accents folded).
fn slugify(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending_dash = false;
    for c in value.chars().flat_map(char::to_lowercase) {
        let mut buf = [0; 4];
        let piece: &str = match c {
            'a'..='z' | '0'..='9' => c.encode_utf8(&mut buf),
            'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' => "a",
            'æ' => "ae",
            'ç' => "c",
            'è' | 'é' | 'ê' | 'ë' => "e",
            'ì' | 'í' | 'î' | 'ï' => "i",
            'ñ' => "n",
            'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' => "o",
            'œ' => "oe",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ý' | 'ÿ' => "y",
            'ß' => "ss",
            _ => {
                pending_dash = true;
                continue;
            }
        };
        if pending_dash && !out.is_empty() {
            out.push('-');
        }
        pending_dash = false;
        out.push_str(piece);
    }
    out
}

fn base64_encode(state: &State, value: &Value) -> Result<String, Error> {
    let bytes: Cow<'_, [u8]> = match defined(state, value)?.as_bytes() {
        Some(bytes) => Cow::Borrowed(bytes),
        None => Cow::Owned(value.to_string().into_bytes()),
    };
    Ok(STANDARD.encode(bytes))
}

fn base64_decode(value: &str) -> Result<Value, Error> {
    let trimmed = value.trim();
    let bytes = STANDARD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .map_err(|err| invalid(format!("invalid base64: {err}")))?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(err) => Value::from_bytes(err.into_bytes()),
    })
}

/// `urlencode`, as Java's `URLEncoder` (what Pebble uses): space becomes `+`.
fn urlencode(state: &State, value: &Value) -> Result<String, Error> {
    let text = match defined(state, value)?.as_str() {
        Some(text) => Cow::Borrowed(text),
        None => Cow::Owned(value.to_string()),
    };
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Dates

/// `date(format?, timeZone=…)`: formats an ISO-8601 date/time text (or epoch seconds) with a
/// Java-style pattern (`yyyy-MM-dd'T'HH:mm:ss.SSSXXX`) or one of Kestra's named formats.
fn date(
    state: &State,
    value: &Value,
    format: Option<&str>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let zone: Option<&str> = kwargs.get("timeZone")?;
    kwargs.assert_all_used()?;
    let instant = parse_datetime(defined(state, value)?).map_err(invalid)?;
    let instant = match zone {
        Some(zone) => in_zone(&instant, zone).map_err(invalid)?,
        None => instant,
    };
    let pattern = match format.unwrap_or("iso") {
        "iso" => "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX",
        "iso_sec" => "yyyy-MM-dd'T'HH:mm:ssXXX",
        "iso_milli" => "yyyy-MM-dd'T'HH:mm:ss.SSSXXX",
        "iso_date" => "yyyy-MM-dd",
        "sql" => "yyyy-MM-dd HH:mm:ss.SSSSSS",
        "sql_seconds" => "yyyy-MM-dd HH:mm:ss",
        other => other,
    };
    format_java_date(&instant, pattern, zone).map_err(invalid)
}

/// `now(timeZone=…)`: the current time, ISO-8601 with milliseconds (`…T10:00:00.123Z`).
fn now(kwargs: Kwargs) -> Result<String, Error> {
    let zone: Option<&str> = kwargs.get("timeZone")?;
    kwargs.assert_all_used()?;
    let now = Utc::now();
    Ok(match zone {
        None => now.to_rfc3339_opts(SecondsFormat::Millis, true),
        Some(zone) => in_zone(&now.fixed_offset(), zone)
            .map_err(invalid)?
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

fn in_zone(instant: &DateTime<FixedOffset>, zone: &str) -> Result<DateTime<FixedOffset>, String> {
    if let Ok(tz) = zone.parse::<chrono_tz::Tz>() {
        return Ok(instant.with_timezone(&tz).fixed_offset());
    }
    if let Ok(offset) = zone.parse::<FixedOffset>() {
        return Ok(instant.with_timezone(&offset));
    }
    Err(format!("unknown time zone `{zone}`"))
}

fn parse_datetime(value: &Value) -> Result<DateTime<FixedOffset>, String> {
    if let Some(text) = value.as_str() {
        let text = text.trim();
        if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
            return Ok(instant);
        }
        for pattern in [
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M",
        ] {
            if let Ok(naive) = NaiveDateTime::parse_from_str(text, pattern) {
                return Ok(naive.and_utc().fixed_offset());
            }
        }
        if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
            return Ok(day.and_time(Default::default()).and_utc().fixed_offset());
        }
        return Err(format!("cannot parse `{text}` as an ISO-8601 date"));
    }
    if value.kind() == ValueKind::Number {
        let instant = match value.as_i64() {
            Some(seconds) => DateTime::from_timestamp(seconds, 0),
            None => f64::try_from(value.clone()).ok().and_then(|seconds| {
                let whole = seconds.floor();
                let nanos = ((seconds - whole) * 1e9).round().min(999_999_999.0) as u32;
                DateTime::from_timestamp(whole as i64, nanos)
            }),
        };
        return instant
            .map(|instant| instant.fixed_offset())
            .ok_or_else(|| format!("timestamp {value} is out of range"));
    }
    Err(format!(
        "date expects a date text or epoch seconds, got {}",
        value.kind()
    ))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats with a Java `DateTimeFormatter` pattern: letters repeat to choose the width,
/// `'…'` quotes literal text, `''` is a quote.
fn format_java_date(
    instant: &DateTime<FixedOffset>,
    pattern: &str,
    zone: Option<&str>,
) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                out.push(chars[i]);
                i += 1;
            }
            i += 1; // the closing quote
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let mut width = 1;
        while chars.get(i + width) == Some(&c) {
            width += 1;
        }
        date_field(&mut out, instant, c, width, zone)?;
        i += width;
    }
    Ok(out)
}

fn date_field(
    out: &mut String,
    t: &DateTime<FixedOffset>,
    letter: char,
    width: usize,
    zone: Option<&str>,
) -> Result<(), String> {
    let mut num = |n: i64| {
        let _ = write!(out, "{n:0width$}");
    };
    match letter {
        'y' | 'u' if width == 2 => num(i64::from(t.year()).rem_euclid(100)),
        'y' | 'u' => num(i64::from(t.year())),
        'M' | 'L' if width <= 2 => num(i64::from(t.month())),
        'M' | 'L' => {
            let name = MONTHS[t.month0() as usize];
            out.push_str(if width == 3 { &name[..3] } else { name });
        }
        'd' => num(i64::from(t.day())),
        'D' => num(i64::from(t.ordinal())),
        'H' => num(i64::from(t.hour())),
        'k' => num(if t.hour() == 0 {
            24
        } else {
            i64::from(t.hour())
        }),
        'h' => num(i64::from(t.hour12().1)),
        'K' => num(i64::from(t.hour() % 12)),
        'm' => num(i64::from(t.minute())),
        's' => num(i64::from(t.second())),
        'S' => {
            let digits = format!("{:09}", t.nanosecond() % 1_000_000_000);
            let take = width.min(9);
            out.push_str(&digits[..take]);
            out.extend(std::iter::repeat_n('0', width - take));
        }
        'a' => out.push_str(if t.hour() < 12 { "AM" } else { "PM" }),
        'E' => {
            let name = WEEKDAYS[t.weekday().num_days_from_monday() as usize];
            out.push_str(if width <= 3 { &name[..3] } else { name });
        }
        'X' | 'x' | 'Z' => {
            let seconds = t.offset().local_minus_utc();
            let zulu = seconds == 0 && (letter == 'X' || (letter == 'Z' && width == 5));
            if zulu {
                out.push('Z');
                return Ok(());
            }
            let sign = if seconds < 0 { '-' } else { '+' };
            let (hours, minutes) = (seconds.abs() / 3600, seconds.abs() % 3600 / 60);
            let _ = match (letter, width) {
                ('X' | 'x', 1) if minutes == 0 => write!(out, "{sign}{hours:02}"),
                ('X' | 'x', 1 | 2) | ('Z', 1..=3) => write!(out, "{sign}{hours:02}{minutes:02}"),
                ('Z', 4) => write!(out, "GMT{sign}{hours:02}:{minutes:02}"),
                _ => write!(out, "{sign}{hours:02}:{minutes:02}"),
            };
        }
        'z' | 'V' | 'O' => match zone {
            Some(zone) => out.push_str(zone),
            None if t.offset().local_minus_utc() == 0 => out.push_str("UTC"),
            None => {
                let _ = write!(out, "{}", t.offset());
            }
        },
        other => return Err(format!("unsupported date pattern letter `{other}`")),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Secrets

/// Every secret value handed out, longest first.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

fn remember_secret(value: &str) {
    let mut candidates = vec![value];
    let trimmed = value.trim();
    if trimmed != value {
        candidates.push(trimmed);
    }
    candidates.retain(|candidate| !candidate.is_empty());
    if candidates.is_empty() {
        return;
    }
    if candidates
        .iter()
        .all(|candidate| SECRETS.read().iter().any(|known| known == candidate))
    {
        return;
    }
    let mut secrets = SECRETS.write();
    for candidate in candidates {
        if !secrets.iter().any(|known| known == candidate) {
            secrets.push(candidate.to_owned());
        }
    }
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
}

/// `secret('NAME')`: `SECRET_NAME` (base64, as Kestra OSS) or else `SWOOP_SECRET_NAME` (plain).
fn secret(name: &str) -> Result<String, Error> {
    let value = lookup_secret(name).map_err(invalid)?;
    remember_secret(&value);
    Ok(value)
}

fn lookup_secret(name: &str) -> Result<String, String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        return Err(format!("invalid secret name `{name}`"));
    }
    if let Some(encoded) = std::env::var_os(format!("SECRET_{name}")) {
        let encoded = encoded.to_string_lossy();
        let encoded = encoded.trim();
        let bytes = STANDARD
            .decode(encoded)
            .or_else(|_| STANDARD_NO_PAD.decode(encoded))
            .map_err(|err| format!("secret `{name}`: SECRET_{name} is not valid base64 ({err})"))?;
        return String::from_utf8(bytes)
            .map_err(|_| format!("secret `{name}`: SECRET_{name} does not decode to UTF-8 text"));
    }
    if let Some(plain) = std::env::var_os(format!("SWOOP_SECRET_{name}")) {
        return plain
            .into_string()
            .map_err(|_| format!("secret `{name}`: SWOOP_SECRET_{name} is not UTF-8 text"));
    }
    Err(format!(
        "secret `{name}` is not set: define SECRET_{name} (base64) or SWOOP_SECRET_{name}"
    ))
}

// ---------------------------------------------------------------------------------------------
// jq

type JqData = jaq_core::data::JustLut<jaq_json::Val>;
type JqProgram = jaq_core::Filter<JqData>;

thread_local! {
    /// Compiled jq programs by filter text. Per thread: jaq values and filters hold `Rc`s.
    static JQ_PROGRAMS: RefCell<HashMap<String, Rc<JqProgram>>> = RefCell::new(HashMap::new());
}

/// `jq(filter)`: runs a jq program on the value (text is parsed as JSON first when it is JSON)
/// and returns the list of all its results.
fn jq_filter(state: &State, value: &Value, filter: &str) -> Result<Value, Error> {
    let input = match defined(state, value)?.as_str() {
        Some(text) => serde_json::from_str(text)
            .unwrap_or_else(|_| serde_json::Value::String(text.to_owned())),
        None => serde_json::to_value(value)
            .map_err(|err| invalid(format!("jq input is not JSON: {err}")))?,
    };
    let results = run_jq(filter, input)
        .map_err(|message| invalid(format!("jq filter `{filter}` failed: {message}")))?;
    Ok(to_value(&results))
}

fn run_jq(filter: &str, input: serde_json::Value) -> Result<Vec<serde_json::Value>, String> {
    let program = jq_program(filter)?;
    let ctx = jaq_core::Ctx::<JqData>::new(&program.lut, jaq_core::Vars::new([]));
    let mut results = Vec::new();
    for result in program.id.run((ctx, json_to_jaq(input))) {
        match result {
            Ok(value) => results.push(jaq_to_json(&value)),
            // Never `unwrap_valr`: it exits the process on `halt`.
            Err(exception) => {
                return Err(match exception.get_err() {
                    Ok(error) => error.to_string(),
                    Err(_) => "the program halted".to_owned(),
                });
            }
        }
        if results.len() > MAX_JQ_RESULTS {
            return Err(format!("more than {MAX_JQ_RESULTS} results"));
        }
    }
    Ok(results)
}

fn jq_program(filter: &str) -> Result<Rc<JqProgram>, String> {
    if let Some(program) = JQ_PROGRAMS.with_borrow(|programs| programs.get(filter).cloned()) {
        return Ok(program);
    }
    let program = Rc::new(compile_jq(filter)?);
    JQ_PROGRAMS.with_borrow_mut(|programs| {
        if programs.len() >= MAX_CACHED_JQ {
            programs.clear();
        }
        programs.insert(filter.to_owned(), Rc::clone(&program));
    });
    Ok(program)
}

fn compile_jq(code: &str) -> Result<JqProgram, String> {
    use jaq_core::load::{Arena, File, Loader};
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    // `env` would hand every environment variable (secrets included) to the template.
    let funs = jaq_core::funs::<JqData>()
        .chain(jaq_std::funs::<JqData>().filter(|(name, _, _)| *name != "env"))
        .chain(jaq_json::funs::<JqData>());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(&arena, File { code, path: () })
        .map_err(|errors| {
            errors
                .into_iter()
                .map(|(_, error)| describe_jq_load_error(error))
                .collect::<Vec<_>>()
                .join("; ")
        })?;
    jaq_core::Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| {
            errors
                .into_iter()
                .flat_map(|(_, undefined)| undefined)
                .map(|(name, kind)| format!("undefined {} `{name}`", kind.as_str()))
                .collect::<Vec<_>>()
                .join("; ")
        })
}

fn describe_jq_load_error(error: jaq_core::load::Error<&str>) -> String {
    use jaq_core::load::{Error as E, lex::Expect as Lex};
    let near = |rest: &str| {
        let rest: String = rest.chars().take(20).collect();
        if rest.is_empty() {
            "at end of input".to_owned()
        } else {
            format!("near `{rest}`")
        }
    };
    let messages: Vec<String> = match error {
        E::Io(errors) => errors
            .into_iter()
            .map(|(path, message)| format!("cannot load `{path}`: {message}"))
            .collect(),
        E::Lex(errors) => errors
            .into_iter()
            .map(|(expect, rest)| {
                let expected = match expect {
                    Lex::Delim("(") => "closing parenthesis",
                    Lex::Delim("[") => "closing bracket",
                    Lex::Delim("{") => "closing brace",
                    Lex::Delim("\"") => "closing quote",
                    Lex::Delim(_) => "closing delimiter",
                    other => other.as_str(),
                };
                format!("expected {expected} {}", near(rest))
            })
            .collect(),
        E::Parse(errors) => errors
            .into_iter()
            .map(|(expect, found)| format!("expected {} {}", expect.as_str(), near(found)))
            .collect(),
    };
    messages.join("; ")
}

fn json_to_jaq(value: serde_json::Value) -> jaq_json::Val {
    use jaq_json::{Num, Val};
    use serde_json::Value as J;
    match value {
        J::Null => Val::Null,
        J::Bool(b) => Val::Bool(b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Val::Num(Num::from_integral(i)),
            (None, Some(u)) => Val::Num(Num::from_integral(u)),
            _ => Val::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Val::from(s),
        J::Array(items) => items.into_iter().map(json_to_jaq).collect(),
        J::Object(map) => Val::obj(
            map.into_iter()
                .map(|(k, v)| (Val::from(k), json_to_jaq(v)))
                .collect(),
        ),
    }
}

fn jaq_to_json(value: &jaq_json::Val) -> serde_json::Value {
    use jaq_json::{Num, Val};
    use serde_json::Value as J;
    match value {
        Val::Null => J::Null,
        Val::Bool(b) => J::Bool(*b),
        Val::Num(Num::Int(i)) => J::from(*i as i64),
        // jq prints NaN as null and infinities as the largest finite floats.
        Val::Num(Num::Float(f)) if f.is_nan() => J::Null,
        Val::Num(Num::Float(f)) => J::from(f.clamp(f64::MIN, f64::MAX)),
        Val::Num(n) => serde_json::from_str(&n.to_string()).unwrap_or(J::Null),
        Val::TStr(bytes) | Val::BStr(bytes) => {
            J::String(String::from_utf8_lossy(bytes).into_owned())
        }
        Val::Arr(items) => J::Array(items.iter().map(jaq_to_json).collect()),
        Val::Obj(map) => J::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(bytes) | Val::BStr(bytes) => {
                            String::from_utf8_lossy(bytes).into_owned()
                        }
                        other => other.to_string(),
                    };
                    (key, jaq_to_json(v))
                })
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------

/// Whether a rendered condition holds (If, Fail's `condition`): anything but an empty text,
/// `false`, `0`, `null`, `no` or `off` (case and surrounding spaces ignored).
pub fn is_truthy(text: &str) -> bool {
    !matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "" | "false" | "0" | "null" | "no" | "off"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, context: serde_json::Value) -> Result<String, RenderError> {
        Templates::global().render(template, &context)
    }

    fn ok(template: &str, context: serde_json::Value) -> String {
        render(template, context).unwrap_or_else(|err| panic!("{err}"))
    }

    #[test]
    fn a_shared_map_renders_as_the_same_map_converted() {
        let vars = json!({"key": "k1", "value": {"id": 7, "tags": ["a", "b"]}, "offset": 3});
        let serde_json::Value::Object(map) = vars.clone() else {
            unreachable!()
        };
        let mut lazy = TemplateContext::default();
        lazy.insert_shared_map("trigger", &Arc::new(map));
        let mut converted = TemplateContext::default();
        converted.insert("trigger", &vars);
        for template in [
            "{{ trigger.value.id }} {{ trigger.value.id }} {{ trigger['key'] }}",
            "{{ trigger.value.tags | join(',') }}",
            "{{ trigger | tojson }}",
            "{{ trigger }}",
            "{{ trigger | length }} {{ trigger is mapping }}",
            "{% for k, v in trigger | items %}{{ k }}={{ v }};{% endfor %}",
            "{{ trigger == {'key': 'k1', 'value': {'id': 7, 'tags': ['a', 'b']}, 'offset': 3} }}",
            "{{ trigger.offset + 1 }}",
        ] {
            let got = Templates::global().render_in(template, &lazy);
            let want = Templates::global().render_in(template, &converted);
            assert_eq!(
                got.as_ref().map_err(ToString::to_string),
                want.as_ref().map_err(ToString::to_string),
                "{template}"
            );
            assert!(got.is_ok(), "{template}: {got:?}");
        }
        let err = Templates::global()
            .render_in("{{ trigger.nope }}", &lazy)
            .unwrap_err();
        assert!(err.to_string().contains("trigger.nope"), "{err}");
    }

    #[test]
    fn render_typed_keeps_the_type_of_a_single_expression() {
        let ctx = json!({"inputs": {"n": 5, "rows": [{"a": 1}]}, "vars": {"s": "x"}});
        let t = |v: serde_json::Value| Templates::global().render_typed(&v, &ctx).unwrap();
        assert_eq!(t(json!("{{ inputs.n }}")), json!(5));
        assert_eq!(t(json!(" {{ inputs.rows }} ")), json!([{"a": 1}]));
        assert_eq!(t(json!("n={{ inputs.n }}")), json!("n=5"));
        assert_eq!(t(json!({"k": ["{{ vars.s }}", 3]})), json!({"k": ["x", 3]}));
        let err = Templates::global()
            .render_typed(&json!("{{ inputs.nope }}"), &ctx)
            .unwrap_err();
        assert!(err.to_string().contains("{{ inputs.nope }}"), "{err}");
    }

    struct FakeFiles;
    impl FileAccess for FakeFiles {
        fn read(&self, uri: &str) -> Result<Vec<u8>, String> {
            match uri {
                "kestra:///ns/f/executions/e/a.ion" => Ok(b"{a:1}\n{a:2}\n".to_vec()),
                "kestra:///ns/f/executions/e/empty" => Ok(Vec::new()),
                _ => Err(format!("no file at {uri}")),
            }
        }
        fn size(&self, uri: &str) -> Result<Option<u64>, String> {
            Ok(self.read(uri).ok().map(|d| d.len() as u64))
        }
    }

    #[test]
    fn file_functions_reach_the_execution_files() {
        let ctx = json!({"uri": "kestra:///ns/f/executions/e/a.ion"});
        let out = with_files(Some(Arc::new(FakeFiles)), || {
            ok(
                "{{ fileSize(uri) }} {{ fileExists(uri) }} {{ fileExists('kestra:///x') }} \
                 {{ isFileEmpty('kestra:///ns/f/executions/e/empty') }} \
                 {{ fromIon(read(uri)).a }} {{ read(uri) | fromIon(true) | length }}",
                ctx.clone(),
            )
        });
        assert_eq!(out, "12 true false true 1 2");
        let err = render("{{ read(uri) }}", ctx).unwrap_err();
        assert!(
            err.message.contains("only available while a task runs"),
            "{err}"
        );
    }

    #[test]
    fn jq_on_object_returns_list() {
        let ctx = json!({"trigger": {"body": {"a": {"b": 3}}}});
        assert_eq!(ok("{{ trigger.body | jq('.a.b') }}", ctx.clone()), "[3]");
        assert_eq!(ok("{{ trigger.body | jq('.a.b') | first }}", ctx), "3");
    }

    #[test]
    fn jq_on_string_input_parses_json() {
        let out = ok(
            r#"{{ '{"product_id":"20"}' | jq('.product_id') | first }}"#,
            json!({}),
        );
        assert_eq!(out, "20");
        // Not JSON: used as a JSON string.
        assert_eq!(ok("{{ 'hello' | jq('length') | first }}", json!({})), "5");
    }

    #[test]
    fn jq_several_results() {
        let ctx = json!({"x": {"items": [{"sku": "a"}, {"sku": "b"}, {"sku": "c"}]}});
        assert_eq!(
            ok("{{ x | jq('.items[].sku') }}", ctx.clone()),
            r#"["a","b","c"]"#
        );
        assert_eq!(
            ok("{{ x | jq('.items[].sku') | length }}", ctx.clone()),
            "3"
        );
        assert_eq!(ok("{{ x | jq('.items[].sku') | last }}", ctx), "c");
    }

    #[test]
    fn jq_array_result_renders_as_json() {
        let ctx = json!({"x": {"items": [{"sku": "a"}, {"sku": "b"}]}});
        assert_eq!(
            ok("{{ x | jq('[.items[].sku]') | first }}", ctx),
            r#"["a","b"]"#
        );
    }

    #[test]
    fn jq_errors_name_the_filter() {
        let err = render("{{ x | jq('.a[') }}", json!({"x": {}})).unwrap_err();
        assert!(err.message.contains("`.a[`"), "{err}");
        let err = render("{{ x | jq('nosuchfn') }}", json!({"x": {}})).unwrap_err();
        assert!(err.message.contains("nosuchfn"), "{err}");
        let err = render("{{ x | jq('.a + 1') }}", json!({"x": {"a": "s"}})).unwrap_err();
        assert!(err.message.contains("`.a + 1`"), "{err}");
        // `env` is not available (it would leak secrets); `halt` must not exit the process.
        assert!(render("{{ x | jq('env') }}", json!({"x": 1})).is_err());
        assert!(render("{{ x | jq('halt') }}", json!({"x": 1})).is_err());
    }

    #[test]
    fn maps_lists_and_scalars_print_like_kestra() {
        let ctx = json!({"trigger": {"a": 1, "b": [true, null]}, "n": null, "f": 1.5, "i": 7});
        assert_eq!(
            ok("{{ trigger }}", ctx.clone()),
            r#"{"a":1,"b":[true,null]}"#
        );
        assert_eq!(ok("{{ [1,2] }}", ctx.clone()), "[1,2]");
        assert_eq!(ok("{{ n }}|{{ f }}|{{ i }}|{{ true }}", ctx), "|1.5|7|true");
    }

    #[test]
    fn strict_undefined_names_the_expression() {
        let err = render("{{ trigger.nope }}", json!({"trigger": {"a": 1}})).unwrap_err();
        assert_eq!(err.expression, "{{ trigger.nope }}");
        assert!(err.message.contains("trigger.nope"), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("cannot render `{{ trigger.nope }}`: "),
            "{text}"
        );
        assert_eq!(err.message, "undefined value: `trigger.nope` is undefined");
        assert!(render("{{ nothing }}", json!({})).is_err());
        for (template, expected) in [
            ("a\n{{ trigger | jq('.[') }}", "`.[` failed"),
            ("a\n{{ trigger | jq('.[') }}", "(line 2)"),
            ("{{ x | jq('.a') }}", "`x` is undefined"),
            ("{{ trigger.a + nope }}", "`nope` is undefined"),
            (
                "{{ trigger.a | toJson }}{{ missing | toJson }}",
                "`missing`",
            ),
        ] {
            let err = render(template, json!({"trigger": {"a": 1}})).unwrap_err();
            assert!(err.message.contains(expected), "{err}");
        }
    }

    #[test]
    fn default_and_defined_on_missing() {
        let ctx = json!({"inputs": {"empty": "", "set": "x"}});
        assert_eq!(ok("{{ inputs.missing | default('y') }}", ctx.clone()), "y");
        assert_eq!(ok("{{ inputs.empty | default('y') }}", ctx.clone()), "y");
        assert_eq!(ok("{{ inputs.set | default('y') }}", ctx.clone()), "x");
        assert_eq!(
            ok(
                "{% if inputs.missing is defined %}a{% else %}b{% endif %}",
                ctx
            ),
            "b"
        );
    }

    #[test]
    fn to_json_from_json_roundtrip() {
        let ctx = json!({"v": {"a": [1, 2.5, "x"], "b": {"c": null}}});
        assert_eq!(
            ok("{{ v | toJson }}", ctx.clone()),
            r#"{"a":[1,2.5,"x"],"b":{"c":null}}"#
        );
        assert_eq!(
            ok("{{ v | json }}", ctx.clone()),
            r#"{"a":[1,2.5,"x"],"b":{"c":null}}"#
        );
        assert_eq!(ok("{{ (v | toJson | fromJson).a[2] }}", ctx.clone()), "x");
        assert_eq!(ok("{{ 'abc' | toJson }}", ctx.clone()), r#""abc""#);
        assert_eq!(ok(r#"{{ fromJson('{"k":[3]}').k[0] }}"#, ctx), "3");
    }

    #[test]
    fn secrets_are_decoded_and_masked() {
        // SAFETY: only this test touches these variables.
        unsafe {
            std::env::set_var("SECRET_TPL_TEST_X", STANDARD.encode("s3cr3t-base64"));
            std::env::set_var("SWOOP_SECRET_TPL_TEST_Y", "plain-s3cr3t");
            std::env::set_var("SECRET_TPL_TEST_BAD", "not base64 !!");
        }
        assert_eq!(ok("{{ secret('TPL_TEST_X') }}", json!({})), "s3cr3t-base64");
        assert_eq!(ok("{{ secret('TPL_TEST_Y') }}", json!({})), "plain-s3cr3t");
        assert_eq!(
            mask_secrets("token=s3cr3t-base64 other=plain-s3cr3t"),
            "token=****** other=******"
        );
        assert!(matches!(mask_secrets("nothing here"), Cow::Borrowed(_)));

        let err = render("{{ secret('TPL_TEST_NONE') }}", json!({})).unwrap_err();
        assert!(
            err.message.contains(
                "secret `TPL_TEST_NONE` is not set: define SECRET_TPL_TEST_NONE (base64) or SWOOP_SECRET_TPL_TEST_NONE"
            ),
            "{err}"
        );
        let err = render("{{ secret('TPL_TEST_BAD') }}", json!({})).unwrap_err();
        assert!(err.message.contains("not valid base64"), "{err}");
    }

    #[test]
    fn now_and_uuid_shapes() {
        let now = ok("{{ now() }}", json!({}));
        assert_eq!(now.len(), "2026-11-24T10:00:00.123Z".len(), "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
        assert!(DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
        let id = ok("{{ uuid() }}", json!({}));
        let parsed = uuid::Uuid::parse_str(&id).expect("a UUID");
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(id, ok("{{ uuid() }}", json!({})));
    }

    #[test]
    fn date_filter_uses_java_patterns() {
        let ctx = json!({"d": "2026-11-24T10:05:09.123456Z"});
        assert_eq!(
            ok("{{ d | date(\"yyyy-MM-dd'T'HH:mm:ss.SSS\") }}", ctx.clone()),
            "2026-11-24T10:05:09.123"
        );
        assert_eq!(
            ok("{{ d | date('dd/MM/yy EEE MMM') }}", ctx.clone()),
            "24/11/26 Tue Nov"
        );
        assert_eq!(
            ok(
                "{{ d | date('HH:mm XXX', timeZone='Europe/Paris') }}",
                ctx.clone()
            ),
            "11:05 +01:00"
        );
        assert_eq!(ok("{{ d | date('iso_sec') }}", ctx), "2026-11-24T10:05:09Z");
        assert_eq!(ok("{{ now() | date('yyyy') }}", json!({})).len(), 4);
    }

    #[test]
    fn check_syntax_rejects_and_accepts() {
        assert!(check_syntax("{{ foo | }}").is_err());
        assert!(check_syntax("{% if %}").is_err());
        let err = check_syntax("line one\n{{ foo | }}").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(check_syntax("{{ foo | upper }}").is_ok());
        assert!(check_syntax("{% if a %}x{% endif %} {{ b | jq('.c') | first }}").is_ok());
        assert!(check_syntax("no template at all {").is_ok());
    }

    #[test]
    fn render_value_recurses() {
        let ctx = json!({"inputs": {"name": "world"}});
        let value = json!({
            "{{ keys }}": "hello {{ inputs.name }}",
            "list": ["{{ inputs.name | upper }}", 3, {"deep": "{{ inputs.name }}"}],
            "n": 1.5,
            "b": false
        });
        let rendered = Templates::global().render_value(&value, &ctx).unwrap();
        assert_eq!(
            rendered,
            json!({
                "{{ keys }}": "hello world",
                "list": ["WORLD", 3, {"deep": "world"}],
                "n": 1.5,
                "b": false
            })
        );
        assert!(
            Templates::global()
                .render_value(&json!(["{{ nope }}"]), &ctx)
                .is_err()
        );
    }

    #[test]
    fn fast_path_returns_identical_strings() {
        let templates = Templates::new();
        for text in ["plain", "", "a { b } c", "json {\"a\": 1}", "50% {x}"] {
            assert_eq!(templates.render(text, &json!({})).unwrap(), text);
        }
        assert_eq!(templates.inner.read().cached, 0);
        assert_eq!(templates.render("{{ 1 + 1 }}", &json!({})).unwrap(), "2");
        assert_eq!(templates.render("{{ 1 + 1 }}", &json!({})).unwrap(), "2");
        assert_eq!(templates.inner.read().cached, 1);
    }

    #[test]
    fn taskrun_value_nested_access() {
        let ctx = json!({
            "taskrun": {"value": "{\"id\": 4}", "iteration": 2},
            "outputs": {"each": {"a": {"value": "done"}}},
        });
        assert_eq!(
            ok("{{ taskrun.value }}-{{ taskrun.iteration }}", ctx.clone()),
            "{\"id\": 4}-2"
        );
        assert_eq!(ok("{{ (taskrun.value | fromJson).id }}", ctx.clone()), "4");
        assert_eq!(ok("{{ outputs.each['a'].value }}", ctx), "done");
    }

    #[test]
    fn pebble_filters() {
        let ctx = json!({"m": {"x": 1, "y": 2}, "s": "Hello Wörld, Café!"});
        assert_eq!(ok("{{ m | keys }}", ctx.clone()), r#"["x","y"]"#);
        assert_eq!(ok("{{ m | values }}", ctx.clone()), "[1,2]");
        assert_eq!(ok("{{ '42' | number + 1 }}", ctx.clone()), "43");
        assert_eq!(ok("{{ '1.5' | number }}", ctx.clone()), "1.5");
        assert_eq!(ok("{{ s | slugify }}", ctx.clone()), "hello-world-cafe");
        assert_eq!(
            ok("{{ 'hi there' | base64encode }}", ctx.clone()),
            "aGkgdGhlcmU="
        );
        assert_eq!(
            ok("{{ 'aGkgdGhlcmU=' | base64decode }}", ctx.clone()),
            "hi there"
        );
        assert_eq!(ok("{{ 'a b&c' | urlencode }}", ctx.clone()), "a+b%26c");
        assert_eq!(
            ok("{{ 'abc' | first }}{{ [4,5] | first }}", ctx.clone()),
            "a4"
        );
        assert_eq!(
            ok("{{ 'a-b-c' | replace('-', '+') }}", ctx.clone()),
            "a+b+c"
        );
        assert_eq!(
            ok("{{ 'I like %x%' | replace({'%x%': 'jq'}) }}", ctx.clone()),
            "I like jq"
        );
        assert_eq!(
            ok("{{ 'a.b.c' | substringAfterLast('.') }}", ctx.clone()),
            "c"
        );
        assert_eq!(ok("{{ 'a,b' | split(',') | join('+') }}", ctx), "a+b");
    }

    #[test]
    fn trailing_newline_is_kept() {
        assert_eq!(ok("{{ 'a' }}\n", json!({})), "a\n");
    }

    #[test]
    fn truthiness_of_rendered_conditions() {
        assert!(is_truthy("true"));
        assert!(is_truthy("yes please"));
        assert!(!is_truthy(" False "));
        assert!(!is_truthy(""));
        assert!(!is_truthy("0"));
    }
}
