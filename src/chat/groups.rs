//! Group conversations: creating them, their membership and their history.
//! Who may do what is decided here, for REST and WebSocket alike; the store
//! keeps the invariants it must check under its locks (the member limit, an
//! owner left behind).

use uuid::Uuid;

use super::{Chat, page_limit};
use crate::bus::Envelope;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::protocol::ServerFrame;
use crate::store::{
    self, Added, Group, GroupAction, GroupPatch, MemberChange, Membership, Message, NewGroup, Page,
    Role,
};

/// A group title: trimmed, 1..=100 characters.
pub const MAX_TITLE_CHARS: usize = 100;

fn title(raw: &str) -> ApiResult<String> {
    super::text::name(raw, MAX_TITLE_CHARS).map_err(|bad| match bad {
        super::text::BadName::Empty => ApiError::invalid_field("title is empty"),
        super::text::BadName::Invalid => ApiError::invalid_field(format!(
            "title must be 1 to {MAX_TITLE_CHARS} characters, {}",
            super::text::NAME_RULE
        )),
    })
}

/// For a former member, who knows the conversation exists.
pub(super) fn not_a_member() -> ApiError {
    ApiError::forbidden("you are not a member of this conversation")
}

/// For a conversation that does not exist, and for one the caller never
/// belonged to: a direct conversation's id is derived from its two users,
/// so any other answer to an outsider would tell who talks to whom.
pub(super) fn no_group(id: Uuid) -> ApiError {
    ApiError::not_found(format!("no conversation with id {id}"))
}

fn too_many(max: u32) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyMembers,
        format!("a group has at most {max} members"),
    )
}

/// Each id once: repeats are a client bug worth naming.
fn distinct(ids: &[Uuid], field: &str) -> ApiResult<()> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    match ids.iter().find(|id| !seen.insert(**id)) {
        Some(dup) => Err(ApiError::invalid_field(format!(
            "{field} lists {dup} more than once"
        ))),
        None => Ok(()),
    }
}

impl Chat {
    /// Creates a group with `me` as its owner and `members` as members.
    pub async fn create_group(
        &self,
        me: Uuid,
        raw_title: &str,
        avatar_url: Option<&str>,
        members: &[Uuid],
    ) -> ApiResult<Group> {
        let title = title(raw_title)?;
        let avatar_url = avatar_url.map(super::avatar_url).transpose()?;
        if members.is_empty() {
            return Err(ApiError::invalid_field(
                "member_ids must name at least one other user",
            ));
        }
        distinct(members, "member_ids")?;
        if members.contains(&me) {
            return Err(ApiError::invalid_field(
                "member_ids lists the other members; the creator joins as owner",
            ));
        }
        let max = self.limits.max_group_members;
        if members.len() + 1 > max as usize {
            return Err(too_many(max));
        }
        self.all_exist(me, members).await?;
        let group = NewGroup {
            id: Uuid::now_v7(),
            title,
            avatar_url,
            creator: me,
            members: members.to_vec(),
            at: store::now(),
        };
        self.store.create_group(&group).await?;
        let group = self
            .store
            .group(group.id)
            .await?
            .ok_or_else(ApiError::internal)?;
        let frame = ServerFrame::ConversationCreated {
            conversation: group.clone(),
        };
        self.tell(&group.member_ids(), &frame).await;
        Ok(group)
    }

    /// A group with its members, for its members only.
    pub async fn group(&self, me: Uuid, id: Uuid) -> ApiResult<Group> {
        self.role(me, id).await?;
        self.store.group(id).await?.ok_or_else(|| no_group(id))
    }

    /// Renames a group or changes its avatar (owners and admins).
    pub async fn update_group(
        &self,
        me: Uuid,
        id: Uuid,
        raw_title: Option<&str>,
        avatar_url: Option<Option<&str>>,
    ) -> ApiResult<Group> {
        let patch = GroupPatch {
            title: raw_title.map(title).transpose()?,
            avatar_url: avatar_url
                .map(|url| url.map(super::avatar_url).transpose())
                .transpose()?,
        };
        if patch.title.is_none() && patch.avatar_url.is_none() {
            return Err(ApiError::invalid_field(
                "give `title`, `avatar_url` or both",
            ));
        }
        let denied = || ApiError::forbidden("only owners and admins can change a group");
        if !GroupAction::Edit.allowed(self.role(me, id).await?, None) {
            return Err(denied());
        }
        match self
            .store
            .update_group(id, me, &patch, store::now())
            .await?
        {
            MemberChange::Done => self.updated(id).await,
            MemberChange::Denied => Err(denied()),
            MemberChange::NotMember | MemberChange::LastOwner => Err(no_group(id)),
        }
    }

    /// Adds members (owners and admins). Current members are left as they
    /// are; former members come back as members.
    pub async fn add_members(&self, me: Uuid, id: Uuid, users: &[Uuid]) -> ApiResult<Group> {
        if users.is_empty() {
            return Err(ApiError::invalid_field("user_ids is empty"));
        }
        distinct(users, "user_ids")?;
        let max = self.limits.max_group_members;
        if users.len() > max as usize {
            return Err(too_many(max));
        }
        let denied = || ApiError::forbidden("only owners and admins can add members");
        if !GroupAction::AddMembers.allowed(self.role(me, id).await?, None) {
            return Err(denied());
        }
        self.all_exist(me, users).await?;
        let joined = match self
            .store
            .add_members(id, me, users, max, store::now())
            .await?
        {
            Added::Joined(joined) => joined,
            Added::TooMany { .. } => return Err(too_many(max)),
            Added::NoGroup => return Err(no_group(id)),
            Added::Denied => return Err(denied()),
        };
        let group = self.store.group(id).await?.ok_or_else(|| no_group(id))?;
        if !joined.is_empty() {
            let frame = ServerFrame::MemberAdded {
                conversation_id: id,
                user_ids: joined,
                by: me,
                conversation: group.clone(),
            };
            self.tell(&group.member_ids(), &frame).await;
        }
        Ok(group)
    }

    /// Removes `user` from a group: anyone may leave; owners remove admins
    /// and members, admins remove members. The last owner hands over first.
    pub async fn remove_member(&self, me: Uuid, id: Uuid, user: Uuid) -> ApiResult<()> {
        let mine = self.role(me, id).await?;
        let action = GroupAction::Remove {
            actor: me,
            target: user,
        };
        let denied =
            || ApiError::forbidden("owners remove admins and members; admins remove members");
        if user != me {
            let theirs = match self.store.membership(id, user).await? {
                Membership::Member(role) => role,
                _ => {
                    return Err(ApiError::not_found(format!(
                        "{user} is not a member of this group"
                    )));
                }
            };
            if !action.allowed(mine, Some(theirs)) {
                return Err(denied());
            }
        }
        // Who hears of it: everyone who was in the group, the removed included.
        let before = self.store.group(id).await?.ok_or_else(|| no_group(id))?;
        match self.store.remove_member(id, me, user, store::now()).await? {
            MemberChange::Done => {}
            MemberChange::Denied => return Err(denied()),
            MemberChange::NotMember => {
                return Err(ApiError::not_found(format!(
                    "{user} is not a member of this group"
                )));
            }
            MemberChange::LastOwner => {
                return Err(ApiError::forbidden(
                    "the last owner must make another member owner before leaving",
                ));
            }
        }
        let frame = ServerFrame::MemberRemoved {
            conversation_id: id,
            user_id: user,
            by: me,
        };
        self.tell(&before.member_ids(), &frame).await;
        Ok(())
    }

    /// Changes a member's role (owners only; a group keeps an owner).
    pub async fn set_role(&self, me: Uuid, id: Uuid, user: Uuid, role: Role) -> ApiResult<Group> {
        let denied = || ApiError::forbidden("only owners can change roles");
        if !GroupAction::SetRole.allowed(self.role(me, id).await?, None) {
            return Err(denied());
        }
        match self
            .store
            .set_role(id, me, user, role, store::now())
            .await?
        {
            MemberChange::Done => self.updated(id).await,
            MemberChange::Denied => Err(denied()),
            MemberChange::NotMember => Err(ApiError::not_found(format!(
                "{user} is not a member of this group"
            ))),
            MemberChange::LastOwner => Err(ApiError::forbidden(
                "a group needs an owner: make another member owner first",
            )),
        }
    }

    /// One page of a conversation named by its id: a group as `me`
    /// received it (a former member keeps what reached them), or a direct
    /// conversation.
    pub async fn history(
        &self,
        me: Uuid,
        id: Uuid,
        before: Option<Uuid>,
        limit: Option<u32>,
    ) -> ApiResult<Page<Message>> {
        let limit = page_limit(limit);
        match self.store.membership(id, me).await? {
            Membership::Member(_) | Membership::Former => {
                Ok(self.store.group_history(me, id, before, limit).await?)
            }
            Membership::Direct { peer } => {
                Ok(self.store.conversation(me, peer, before, limit).await?)
            }
            Membership::Outsider | Membership::NotFound => Err(no_group(id)),
        }
    }

    /// `me`'s role in group `id`; an error for anyone else.
    async fn role(&self, me: Uuid, id: Uuid) -> ApiResult<Role> {
        match self.store.membership(id, me).await? {
            Membership::Member(role) => Ok(role),
            Membership::NotFound | Membership::Outsider | Membership::Direct { .. } => {
                Err(no_group(id))
            }
            Membership::Former => Err(not_a_member()),
        }
    }

    /// Every user exists, and none has blocked `me` (who, for them, does
    /// not exist either way: the answers are the same).
    async fn all_exist(&self, me: Uuid, users: &[Uuid]) -> ApiResult<()> {
        let missing = self.store.missing_users(users).await?;
        let pairs: Vec<(Uuid, Uuid)> = users.iter().map(|&u| (u, me)).collect();
        let blocked = self.store.blocked(&pairs).await?;
        let first = users
            .iter()
            .find(|u| missing.contains(u) || blocked.contains(&(**u, me)));
        match first {
            Some(missing) => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("no user with id {missing}"),
            )),
            None => Ok(()),
        }
    }

    /// Tells every member that the group changed; returns it as it is now.
    async fn updated(&self, id: Uuid) -> ApiResult<Group> {
        let group = self.store.group(id).await?.ok_or_else(|| no_group(id))?;
        let frame = ServerFrame::ConversationUpdated {
            conversation: group.clone(),
        };
        self.tell(&group.member_ids(), &frame).await;
        Ok(group)
    }

    /// Membership events are best effort, like typing: a member who missed
    /// one reads the group again (`GET /conversations/{id}`).
    async fn tell(&self, users: &[Uuid], frame: &ServerFrame) {
        let (kind, json) = (frame.kind(), frame.to_json());
        let events = users
            .iter()
            .map(|&u| (u, Envelope::shared(kind, json.clone(), None)))
            .collect();
        self.publish(events).await;
    }
}
