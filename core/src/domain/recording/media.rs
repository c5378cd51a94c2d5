//! Media records (SCHEMAS.md §5): the media library of finished recording files, their search
//! (§5.1) and deletion (§5.2). (Being written.)
