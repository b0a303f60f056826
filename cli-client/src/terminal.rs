//! The chat's terminal: a one-line editor that owns the input line, and a
//! `Screen` that prints incoming lines above it without garbling it.
//!
//! Printing a message clears the input line, writes the message, and redraws
//! the prompt with whatever was half typed, cursor where it was. Keys come
//! from crossterm's event stream, one event per key, so pasted text works
//! like typed text. When stdin is not a terminal (scripts), lines are read
//! plainly and printed plainly.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use crossterm::cursor::MoveToColumn;
use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::style::Print;
use crossterm::terminal::{self, Clear, ClearType};
use crossterm::QueueableCommand;
use futures_util::StreamExt;
use tokio::sync::mpsc;

const PROMPT: &str = "> ";

/// What the user typed.
pub enum Input {
    Line(String),
    Quit,
}

#[derive(Default)]
struct Editor {
    tty: bool,
    buffer: Vec<char>,
    cursor: usize,
    history: Vec<String>,
    /// Position while browsing history (None: editing a new line).
    browsing: Option<usize>,
}

/// Shared by the key reader and whoever prints messages.
#[derive(Clone, Default)]
pub struct Screen {
    editor: Arc<Mutex<Editor>>,
}

/// Leaves raw mode when the chat ends, however it ends.
pub struct RawMode(bool);

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = terminal::disable_raw_mode();
            println!();
        }
    }
}

impl Screen {
    fn lock(&self) -> MutexGuard<'_, Editor> {
        self.editor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Prints a line above the input line.
    pub fn say(&self, line: String) {
        let ed = self.lock();
        if !ed.tty {
            println!("{line}");
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = out.queue(MoveToColumn(0));
        let _ = out.queue(Clear(ClearType::CurrentLine));
        for l in line.lines() {
            let _ = out.queue(Print(l));
            let _ = out.queue(Print("\r\n"));
        }
        draw(&mut out, &ed);
    }
}

fn draw(out: &mut impl Write, ed: &Editor) {
    let text: String = ed.buffer.iter().collect();
    let _ = out.queue(MoveToColumn(0));
    let _ = out.queue(Clear(ClearType::CurrentLine));
    let _ = out.queue(Print(PROMPT));
    let _ = out.queue(Print(text));
    let _ = out.queue(MoveToColumn((PROMPT.len() + ed.cursor) as u16));
    let _ = out.flush();
}

/// Starts reading input; lines arrive on the returned channel.
pub fn start() -> (Screen, mpsc::UnboundedReceiver<Input>, RawMode) {
    let (tx, rx) = mpsc::unbounded_channel();
    let screen = Screen::default();
    let tty = std::io::stdin().is_terminal() && terminal::enable_raw_mode().is_ok();
    screen.lock().tty = tty;
    if tty {
        let s = screen.clone();
        tokio::spawn(async move {
            let mut events = EventStream::new();
            draw(&mut std::io::stdout(), &s.lock());
            while let Some(Ok(event)) = events.next().await {
                if let Event::Key(key) = event {
                    if key.kind == KeyEventKind::Release {
                        continue;
                    }
                    if let Some(input) = s.key(key) {
                        let quit = matches!(input, Input::Quit);
                        if tx.send(input).is_err() || quit {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Input::Quit);
        });
    } else {
        std::thread::spawn(move || {
            let mut line = String::new();
            loop {
                line.clear();
                match std::io::stdin().read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Input::Quit);
                        return;
                    }
                    Ok(_) => {
                        if tx.send(Input::Line(line.trim_end().to_owned())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    (screen, rx, RawMode(tty))
}

impl Screen {
    /// Applies one key; returns a finished line or a quit.
    fn key(&self, key: KeyEvent) -> Option<Input> {
        let mut ed = self.lock();
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let mut out = std::io::stdout().lock();
        // A bare line feed reads as Ctrl-J in raw mode; it means Enter.
        let code = match key.code {
            KeyCode::Char('j') if ctrl => KeyCode::Enter,
            code => code,
        };
        match code {
            KeyCode::Char('c') if ctrl => return Some(Input::Quit),
            KeyCode::Char('d') if ctrl && ed.buffer.is_empty() => return Some(Input::Quit),
            KeyCode::Char('u') if ctrl => {
                ed.buffer.clear();
                ed.cursor = 0;
            }
            KeyCode::Char(c) if !ctrl => {
                let at = ed.cursor;
                ed.buffer.insert(at, c);
                ed.cursor += 1;
            }
            KeyCode::Backspace if ed.cursor > 0 => {
                ed.cursor -= 1;
                let at = ed.cursor;
                ed.buffer.remove(at);
            }
            KeyCode::Delete if ed.cursor < ed.buffer.len() => {
                let at = ed.cursor;
                ed.buffer.remove(at);
            }
            KeyCode::Left if ed.cursor > 0 => ed.cursor -= 1,
            KeyCode::Right if ed.cursor < ed.buffer.len() => ed.cursor += 1,
            KeyCode::Home => ed.cursor = 0,
            KeyCode::End => ed.cursor = ed.buffer.len(),
            KeyCode::Up | KeyCode::Down => {
                let n = ed.history.len();
                let pos = match (code, ed.browsing) {
                    (KeyCode::Up, None) if n > 0 => Some(n - 1),
                    (KeyCode::Up, Some(i)) => Some(i.saturating_sub(1)),
                    (KeyCode::Down, Some(i)) if i + 1 < n => Some(i + 1),
                    _ => None,
                };
                ed.browsing = pos;
                ed.buffer = pos
                    .map(|i| ed.history[i].chars().collect())
                    .unwrap_or_default();
                ed.cursor = ed.buffer.len();
            }
            KeyCode::Enter => {
                let line: String = ed.buffer.drain(..).collect();
                ed.cursor = 0;
                ed.browsing = None;
                // Leave the typed line in the scrollback, start a fresh one.
                let _ = out.queue(Print("\r\n"));
                if !line.trim().is_empty() {
                    ed.history.push(line.clone());
                }
                draw(&mut out, &ed);
                return Some(Input::Line(line));
            }
            _ => {}
        }
        draw(&mut out, &ed);
        None
    }
}
