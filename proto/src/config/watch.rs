//! Which file-system events mean a config file may have changed.
//!
//! Both planes watch their config with notify. Reading a file is itself an event (inotify's
//! `IN_OPEN` / `IN_CLOSE_NOWRITE`, notify's `EventKind::Access`): reacting to it made every reload
//! read the file, which raised another event, which reloaded again — twenty reloads a second, for
//! ever, from one `cat`. Only creation, modification, removal and renames (a ConfigMap's `..data`
//! swap is a rename) can change what the file says.

use notify::EventKind;

/// Whether an event of this kind can have changed a watched file's contents.
pub fn may_change_content(kind: &EventKind) -> bool {
    matches!(kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};

    #[test]
    fn reads_are_not_changes() {
        assert!(!may_change_content(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!may_change_content(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(!may_change_content(&EventKind::Other));
        for change in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Modify(ModifyKind::Any),
            EventKind::Remove(RemoveKind::File),
        ] {
            assert!(may_change_content(&change), "{change:?}");
        }
    }
}
