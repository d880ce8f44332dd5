//! `$PIV_HOME`: where it is, and creating it with mode 0700 (files 0600).
