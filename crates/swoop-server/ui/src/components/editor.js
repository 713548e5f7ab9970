// The YAML flow editor: CodeMirror 6 with YAML highlighting, a lint gutter, and validation as
// you type (debounced 300 ms) through a given async `validate(text) → problems` whose problems
// ({line, column, message, severity}) become lint diagnostics at their line.

import { indentWithTab } from '@codemirror/commands';
import { yaml } from '@codemirror/lang-yaml';
import { forceLinting, linter, lintGutter, setDiagnostics } from '@codemirror/lint';
import { EditorState } from '@codemirror/state';
import { keymap } from '@codemirror/view';
import { basicSetup, EditorView } from 'codemirror';

const theme = EditorView.theme({
  '&': { fontSize: '13px', height: '100%', backgroundColor: '#fff' },
  '.cm-scroller': { fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, monospace', lineHeight: '1.5' },
  '.cm-gutters': { backgroundColor: '#f7f8fa', borderRight: '1px solid #e3e6ea', color: '#8a94a3' },
  '.cm-activeLineGutter': { backgroundColor: '#eef1f5' },
  '.cm-activeLine': { backgroundColor: '#f6f8fb' },
  '&.cm-focused': { outline: 'none' },
});

/** Problems to diagnostics, each from its column to the end of its line. */
export function toDiagnostics(doc, problems) {
  return problems.map((p) => {
    const lineNo = Math.min(Math.max(1, p.line || 1), doc.lines);
    const line = doc.line(lineNo);
    const col = Math.max(0, (p.column || 1) - 1);
    let from = Math.min(line.from + col, line.to);
    if (from === line.to && line.text.trim()) from = line.from + (line.text.length - line.text.trimStart().length);
    return { from, to: line.to, severity: p.severity || 'error', message: p.message, source: p.path || undefined };
  });
}

/**
 * Creates the editor in `parent`. Options: `doc`, `validate(text)` (async, answers problems),
 * `onProblems(problems, text)` after each validation, `onValidateError(e)`, `onChange(text)`,
 * `onSave()` (Ctrl/Cmd-S).
 */
export function createEditor(parent, { doc = '', validate, onProblems, onValidateError, onChange, onSave }) {
  const source = async (view) => {
    const snapshot = view.state.doc;
    const text = snapshot.toString();
    let problems;
    try {
      problems = await validate(text);
    } catch (e) {
      if (onValidateError) onValidateError(e);
      return [];
    }
    if (view.state.doc !== snapshot) return [];
    if (onProblems) onProblems(problems, text);
    return toDiagnostics(snapshot, problems);
  };
  const extensions = [
    basicSetup,
    yaml(),
    lintGutter(),
    linter(source, { delay: 300 }),
    keymap.of([
      indentWithTab,
      { key: 'Mod-s', preventDefault: true, run: () => { if (onSave) onSave(); return true; } },
    ]),
    EditorView.updateListener.of((u) => {
      if (u.docChanged && onChange) onChange(u.state.doc.toString());
    }),
    theme,
  ];
  const view = new EditorView({ state: EditorState.create({ doc, extensions }), parent });
  return {
    view,
    getText: () => view.state.doc.toString(),
    setText(text) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
    },
    /** Shows `problems` now (e.g. the ones a save answered), until the next validation. */
    showProblems(problems) {
      view.dispatch(setDiagnostics(view.state, toDiagnostics(view.state.doc, problems)));
    },
    revalidate: () => forceLinting(view),
    goToLine(n) {
      const line = view.state.doc.line(Math.min(Math.max(1, n), view.state.doc.lines));
      view.dispatch({ selection: { anchor: line.from }, scrollIntoView: true });
      view.focus();
    },
    destroy: () => view.destroy(),
  };
}
